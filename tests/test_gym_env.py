"""Bring your own robot as a gymnasium env: a world model trained on data collected from `gym:ENV_ID` (an env flexwm
has no code for, registered by a test module) gets its own embodiment adapter and works with flexwm eval,
evaluate-policies, improve, steer-wam and gymnasium.make("flexwm/WorldModel-v0")."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from typer.testing import CliRunner

import flexwm
from flexwm.cli import app
from flexwm.errors import ConfigError
from tests.helpers.toy_gym import ENV_ID
from tests.helpers.tracking import read_scalars

TOY = f"gym:{ENV_ID}"
OPTS = {"pixels": "image", "proprio": "agent_pos", "instructions": "reach the green dot"}
ENV_SET = [arg for k, v in OPTS.items() for arg in ("--env-set", f"{k}={v}")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny world model trained (a few steps) on random and play episodes of the toy gymnasium env."""
    from flexwm.training.run import preset, train_world_model

    root = tmp_path_factory.mktemp("gym")
    flexwm.collect(root / "data", env=TOY, env_options=OPTS, sources=["random", "play"], episodes=2, max_steps=10,
                   image_size=32, progress=False)
    cfg = preset("tiny", data=[str(root / "data")], tokenizer={"image_size": 32}, tokenizer_steps=4,
                 train={"steps": 2, "ckpt_every": 2, "log_every": 2})
    train_world_model(cfg, root / "run", progress=False)
    return root / "run"


def _invoke(argv):
    r = CliRunner().invoke(app, [str(a) for a in argv])
    assert r.exit_code == 0, f"{r.output}\n{r.exception!r}"
    return r


def test_the_model_has_the_env_s_embodiment_and_acts_there(run, tmp_path):
    model = flexwm.load(run, env=TOY)
    assert model.embodiment == "gym-toyreach-v0" and model.action_dim == 4 and model.image_size == (32, 32)
    _invoke(["eval", "--ckpt", run, "--env", TOY, *ENV_SET, "--policy", "wam", "--episodes", 2, "--max-steps", 4,
             "--out", tmp_path / "eval"])
    result = json.loads((tmp_path / "eval" / "eval-wam.json").read_text())
    assert result["tasks"] == ["ToyReach-v0"] and result["env_options"]["pixels"] == "image"
    episodes = result["per_task"]["ToyReach-v0"]["per_episode"]
    assert [(e["instruction"], e["steps"]) for e in episodes] == [("reach the green dot", 4)] * 2
    r = CliRunner().invoke(app, [str(a) for a in ["eval", "--ckpt", run, "--env", TOY, "--env-set", "pixels=render",
                                                   "--policy", "wam", "--episodes", 2, "--max-steps", 4, "--out",
                                                   tmp_path / "eval", "--resume"]])
    assert isinstance(r.exception, ConfigError) and "env_options" in str(r.exception)  # other settings: no resume


def test_evaluate_policies_in_the_env_and_in_its_world_model(run, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("policies:\n  - {name: random, kind: random}\n  - {name: wam, kind: flexwm, mode: wam}\n")
    _invoke(["evaluate-policies", "--ckpt", run, "--suite", suite, "--env", TOY, *ENV_SET, "--episodes", 2,
             "--horizon", 4, "--out", tmp_path / "pe"])
    result = json.loads((tmp_path / "pe" / "policy_eval.json").read_text())
    assert result["env"] == TOY and result["task"] == "ToyReach-v0"
    assert [p["name"] for p in result["policies"]] == ["random", "wam"]
    assert all(p["real"]["episodes"] == 2 and p["imagined"]["episodes"] == 2 for p in result["policies"])


def test_improve_and_steer_wam_in_imagination_and_in_the_env(run, tmp_path):
    from flexwm.planning.bc import BCModel
    from flexwm.planning.bc import preset as bc_preset

    torch.manual_seed(0)
    BCModel(bc_preset("tiny", image_size=(32, 32), proprio_dim=0, horizon=4, action_dim=4)).save_pretrained(
        tmp_path / "bc")
    small = ["--set", "iterations=1", "--set", "starts=2", "--set", "samples=2", "--set", "max_steps=4",
             "--set", "updates=1"]
    for backend in (["--ckpt", run], ["--real"]):
        out = tmp_path / f"improved-{backend[0].strip('-')}"
        _invoke(["improve", "--bc", tmp_path / "bc", *backend, "--env", TOY, *ENV_SET, "--out", out, *small,
                 "--tensorboard"])
        log = json.loads((out / "improve_log.json").read_text())
        assert log["task"] == "ToyReach-v0" and log["instruction"] == "reach the green dot"
        assert (out / "model.safetensors").exists()
        assert read_scalars(out / "tensorboard"), "improve --tensorboard wrote no curves"
    _invoke(["steer-wam", "--ckpt", run, "--env", TOY, *ENV_SET, "--out", tmp_path / "steer", *small,
             "--set", "hidden=8", "--tensorboard"])
    assert (tmp_path / "steer" / "model.safetensors").exists()
    assert read_scalars(tmp_path / "steer" / "tensorboard"), "steer-wam --tensorboard wrote no curves"


def test_gym_make_with_the_trained_model(run):
    env = gym.make("flexwm/WorldModel-v0", ckpt=str(run), env=TOY, env_options=OPTS, horizon=3, obs_mode="image",
                   render_mode="rgb_array")
    wm, sim = env.unwrapped.imagination.wm, env.unwrapped._owned[0]
    assert wm.embodiment == "gym-toyreach-v0" and env.spec.id == "flexwm/WorldModel-v0"
    assert env.metadata["render_fps"] == 15 / wm.frame_stride  # the env's 15 fps, frame_stride actions a step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and env.unwrapped.imagination.instructions[0] == "reach the green dot"
    env.close()
    assert sim.sim is None
