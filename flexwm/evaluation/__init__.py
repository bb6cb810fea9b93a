"""Evaluation: success rates on the real simulator with confidence intervals, policy-evaluation statistics."""
