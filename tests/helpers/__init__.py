"""Shared test helpers: synthetic data, tiny world models, toy problems. Plain functions, no fixtures
(fixtures live in the conftest.py next to the tests that use them); keep this file free of imports so that
`python -m tests.helpers.synth_data` starts quickly."""
