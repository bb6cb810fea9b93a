from flexwm.evaluation.policy_eval import load_suite
from tests.helpers.paths import EXAMPLES


def test_example_suite_parses_with_eight_graded_policies():
    specs = load_suite(EXAMPLES / "suite.yaml")
    assert len(specs) >= 8 and len({s.name for s in specs}) == len(specs)
    assert {s.kind for s in specs} >= {"expert", "noisy", "random", "flexwm"}


def test_bc_snapshot_suite_parses_and_names_its_checkpoints():
    specs = load_suite(EXAMPLES / "suite_bc.yaml")
    assert len(specs) >= 8 and len({s.name for s in specs}) == len(specs)
    bc = [s for s in specs if s.kind == "bc"]
    assert len(bc) >= 3 and len({s.checkpoint for s in bc}) == len(bc)
