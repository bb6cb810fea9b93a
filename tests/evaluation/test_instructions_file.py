"""`flexwm eval --instructions FILE`: the user's instructions per task, cycled over episodes, success reported
per instruction; bad files get errors that name the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gymnasium import spaces

from flexwm.errors import ConfigError
from flexwm.evaluation.simulator import evaluate_policy, load_instruction_file
from flexwm.planning import make_policy

pytest.importorskip("metaworld")


def _write(tmp_path, table, name: str = "instructions.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(table))
    return str(path)


def test_episodes_cycle_through_the_given_instructions_and_are_scored_per_instruction():
    policy = make_policy("random", action_space=spaces.Box(-1, 1, (4,), np.float32))
    out = evaluate_policy(policy, "metaworld", "reach-v3", episodes=3, seed=5, max_steps=4,
                          instructions=["reach the red ball", "touch the target"])
    assert [e["instruction"] for e in out["per_episode"]] == ["reach the red ball", "touch the target",
                                                               "reach the red ball"]
    assert out["instruction_split"] == "given"
    per = out["per_instruction"]
    assert list(per) == ["reach the red ball", "touch the target"]
    assert [per[s]["episodes"] for s in per] == [2, 1]
    assert sum(per[s]["successes"] for s in per) == out["summary"]["successes"]


def test_the_split_still_works_and_reports_per_instruction():
    policy = make_policy("random", action_space=spaces.Box(-1, 1, (4,), np.float32))
    out = evaluate_policy(policy, "metaworld", "reach-v3", episodes=2, seed=5, max_steps=3)
    assert out["instruction_split"] == "eval"
    assert sum(s["episodes"] for s in out["per_instruction"].values()) == 2


def test_instruction_file_is_checked(tmp_path):
    good = _write(tmp_path, {"reach-v3": ["reach the goal"], "door-open-v3": ["open the door"]})
    assert load_instruction_file(good, "metaworld", ["reach-v3"]) == {"reach-v3": ["reach the goal"]}
    with pytest.raises(ConfigError, match=r"'door-opn-v3' \(did you mean 'door-open-v3'\?\)"):
        load_instruction_file(_write(tmp_path, {"door-opn-v3": ["open it"]}, "typo.json"), "metaworld", ["reach-v3"])
    with pytest.raises(ConfigError, match=r"no instructions for the evaluated tasks \['door-close-v3'\]"):
        load_instruction_file(good, "metaworld", ["reach-v3", "door-close-v3"])
    with pytest.raises(ConfigError, match="non-empty list of instruction strings"):
        load_instruction_file(_write(tmp_path, {"reach-v3": []}, "empty.json"), "metaworld", ["reach-v3"])
    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{reach")
        load_instruction_file(tmp_path / "bad.json", "metaworld", ["reach-v3"])
    with pytest.raises(ConfigError, match="no such file"):
        load_instruction_file(tmp_path / "missing.json", "metaworld", ["reach-v3"])


def test_cli_refuses_an_unknown_task_before_loading_the_model(tmp_path):
    from typer.testing import CliRunner

    from flexwm.cli import app

    path = _write(tmp_path, {"reach-v3": ["reach"], "raech-v3": ["reach"]})
    r = CliRunner().invoke(app, ["eval", "--ckpt", str(tmp_path / "no-model"), "--task", "reach-v3",
                                 "--instructions", path, "--out", str(tmp_path / "out")])
    assert r.exit_code != 0
    assert "raech-v3" in r.output + str(r.exception) and "did you mean 'reach-v3'" in r.output + str(r.exception)
