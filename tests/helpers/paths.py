"""Folders of the repository, for tests that read examples or run scripts (no sys.path edits)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
EXAMPLES = REPO / "examples"
