"""A self-contained model folder: `flexwm export` / `flexwm.load` / `from_pretrained`, and `--ckpt` accepting a
run, a checkpoint and an exported folder (the shipped demo checkpoint included)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flexwm.errors import CheckpointError, ConfigError
from tests.helpers.toy_training_data import tiny_run, toy_episode

DEMO = Path(__file__).resolve().parents[1] / "flexwm" / "assets" / "demo"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("export"))


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_exported_folder_is_self_contained(run, tmp_path):
    """Export a run, copy the folder elsewhere, delete the run: the copy loads and acts, equal to the original."""
    import flexwm
    from flexwm.envs.base import Observation
    from flexwm.inference import load_run

    work = tmp_path / "work"
    shutil.copytree(run.parent, work)  # the run and its data, deleted below
    run = work / "run"
    original = load_run(run, steps=2)
    exported = flexwm.export(run, tmp_path / "exported")
    moved = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(exported, moved)
    shutil.rmtree(exported)
    shutil.rmtree(work)  # nor does it need the data it was trained on

    index = json.loads((moved / "model_index.json").read_text())
    assert index["format"] == "flexwm-model" and index["embodiments"]["toy"]["action_dim"] == 2
    assert sorted(p.name for p in moved.iterdir()) == ["model_index.json", "text_encoder", "tokenizer", "world_model"]
    for f in moved.rglob("*.json"):  # no absolute or run-local paths, no run config, no split
        for s in _strings(json.loads(f.read_text())):
            assert not s.startswith("/") and str(work) not in s and "toy/" not in s, (f, s)
        assert "data" not in json.loads(f.read_text()), f
    assert not list(moved.rglob("split.json")) and not list(moved.rglob("run_config.json"))
    wm_cfg = json.loads((moved / "world_model" / "config.json").read_text())
    assert "latent_shape" in wm_cfg and "train" not in wm_cfg  # the model's config only
    text_cfg = json.loads((moved / "text_encoder" / "config.json").read_text())
    assert text_cfg["config"]["kind"] == "hash" and text_cfg["cached_instructions"] >= 1

    model = flexwm.load(moved, steps=2)
    same = flexwm.FlexWorldModelWrapper.from_pretrained(moved, steps=2)
    for a, b, c in zip(original.model.state_dict().values(), model.model.state_dict().values(),
                       same.model.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert model.text_encoder.cache_path is not None  # the cached instruction embeddings came along
    frame = toy_episode(0, "success").frames[0]
    with torch.no_grad():
        state = model.encode(frame[None], np.zeros((1, 2), np.float32))
        actions, latents = model.propose(state, "move the square", n=2, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (1, 2, model.horizon, 2) and torch.isfinite(actions).all()
    policy = flexwm.make_policy(model, "wam")
    policy.reset(0)
    action = policy.act(Observation(image=frame, proprio=np.zeros(2, np.float32), instruction="move the square"))
    assert action.shape == (2,) and np.isfinite(action).all()


def test_export_refuses_a_full_folder_and_a_checkpoint_without_its_run(run, tmp_path):
    import flexwm
    from flexwm.runs import find_latest

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        flexwm.export(run, tmp_path / "full")
    lone = tmp_path / "lone-checkpoint"
    shutil.copytree(find_latest(run), lone)  # a checkpoint copied out of its run has no tokenizer
    with pytest.raises(CheckpointError, match="flexwm export"):
        flexwm.load(lone)


def test_every_kind_of_model_folder_loads(run, tmp_path):
    """A run, one of its checkpoints, an exported folder, an export of an export, and the shipped demo."""
    import flexwm
    from flexwm.runs import find_latest

    first = flexwm.export(run, tmp_path / "a")
    second = flexwm.export(first, tmp_path / "b")
    ref = flexwm.load(run).model.state_dict()
    for path in (find_latest(run), first, second):
        got = flexwm.load(path).model.state_dict()
        assert all(torch.equal(ref[k], v) for k, v in got.items())
    demo = flexwm.load(DEMO)
    assert demo.embodiment == "sawyer" and demo.action_dim == 4


def test_cli_export_then_eval_with_the_exported_folder_writes_outside_the_model(run, tmp_path):
    """`flexwm export` then `flexwm eval --ckpt EXPORTED` (random policy, one short episode): the result lands
    in runs/eval/NAME/ under the working directory, and the model folder is unchanged."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cli = [sys.executable, "-m", "flexwm.cli"]
    r = subprocess.run([*cli, "export", str(run), "--out", str(tmp_path / "m")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    before = sorted(p.relative_to(tmp_path / "m") for p in (tmp_path / "m").rglob("*"))
    r = subprocess.run([*cli, "eval", "--ckpt", str(tmp_path / "m"), "--env", "pusht", "--task", "pusht",
                        "--policy", "random", "--episodes", "1", "--max-steps", "4"], env=env, capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "runs" / "eval" / "m" / "eval-random.json").read_text())
    assert res["pooled"]["episodes"] == 1 and res["ckpt"] == str(tmp_path / "m")
    assert sorted(p.relative_to(tmp_path / "m") for p in (tmp_path / "m").rglob("*")) == before
