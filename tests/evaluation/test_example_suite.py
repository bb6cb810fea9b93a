from pathlib import Path

from flexwm.evaluation.policy_eval import load_suite


def test_example_suite_parses_with_eight_graded_policies():
    specs = load_suite(Path(__file__).resolve().parents[2] / "examples" / "suite.yaml")
    assert len(specs) >= 8 and len({s.name for s in specs}) == len(specs)
    assert {s.kind for s in specs} >= {"expert", "noisy", "random", "flexwm"}
