"""The command line's shared vocabulary: one `--set` syntax, the same option names for the same meaning on
every command, `--version`, and a clear error (no traceback) for every CUDA request on a machine without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flexwm.cli import app
from flexwm.config import apply_overrides, parse_overrides, parse_value
from flexwm.errors import ConfigError

DEMO = Path(__file__).resolve().parents[1] / "flexwm" / "assets" / "demo"
COMMANDS = typer.main.get_command(app).commands
# commands that load or train a model: each has --device
MODEL_COMMANDS = ("train", "train-bc", "eval", "improve", "steer-wam", "evaluate-policies", "calibrate", "tune-head",
                  "report", "demo")


def _opts(command: str) -> dict[str, list[str]]:
    cmd = COMMANDS[command]
    return {p.name: list(p.opts) for p in cmd.params}


def test_version():
    from flexwm import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"flexwm {__version__}"


def test_override_syntax_is_one_for_every_value():
    assert parse_overrides(["train.lr=3e-4", "train.steps=10", "model.mode_weights.ac=3", "data=[a, b]",
                            "tokenizer_path=null", "name=hello world", "flag=true", "x=-2"]) == {
        "train": {"lr": 3e-4, "steps": 10}, "model": {"mode_weights": {"ac": 3}}, "data": ["a", "b"],
        "tokenizer_path": None, "name": "hello world", "flag": True, "x": -2}
    assert parse_value("1e3") == 1000.0 and parse_value("0.5") == 0.5 and parse_value("cem") == "cem"
    for bad, msg in (("steps", "key=value"), ("=3", "key=value"), ("a..b=1", "key=value"), ("x=[1,", "not valid YAML")):
        with pytest.raises(ConfigError, match=msg) as e:
            parse_overrides([bad])
        assert repr(bad) in str(e.value)  # the error names the override at fault


def test_overrides_are_checked_and_name_the_bad_one():
    from flexwm.rl.improve import ImproveConfig
    from flexwm.training.run import preset

    cfg = apply_overrides(preset("tiny"), ["train.steps=7", "model.mode_weights.ac=3", "data=[d1, d2]"])
    assert cfg.train.steps == 7 and cfg.model.mode_weights["ac"] == 3 and cfg.data == ["d1", "d2"]
    assert apply_overrides(ImproveConfig(), ["iterations=2"]).iterations == 2
    for bad, msg in (("train.stpes=5", "Did you mean 'steps'"), ("train.steps=many", "expects an integer"),
                     ("train=3", "train")):
        with pytest.raises(ConfigError, match=msg) as e:
            apply_overrides(preset("tiny"), ["seed=1", bad])
        assert f"--set {bad!r}" in str(e.value)


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--data", "d", "--out", "o", "--preset", "tiny", "--set", "train.stpes=5"], "train.stpes=5"),
    (["eval", "--ckpt", str(DEMO), "--policy", "cem", "--set", "populaton=8", "--out", "o.json"], "populaton"),
    (["improve", "--bc", "b", "--task", "reach-v3", "--out", "o", "--real", "--set", "iterations=lots"],
     "iterations=lots"),
    (["steer-wam", "--ckpt", str(DEMO), "--task", "reach-v3", "--out", "o", "--set", "itrations=2"], "itrations"),
])
def test_every_set_goes_through_the_same_checks(argv, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError), r.output
    assert fragment in str(r.exception) and "--set" in str(r.exception)


def test_same_meaning_same_name_on_every_command():
    for name in COMMANDS:
        opts = _opts(name)
        if "ckpt" in opts:
            assert opts["ckpt"] == ["--ckpt"], name
        if "task" in opts:  # one task or a comma-separated list; the old plural spelling still works
            assert opts["task"] == ["--task", "--tasks"], name
        assert "tasks" not in opts, name
        for key in ("seed", "out", "device", "flow_steps", "set_", "episodes", "env", "resume"):
            if key in opts:
                assert opts[key] == ["--" + key.strip("_").replace("_", "-")], (name, key)
    for name in MODEL_COMMANDS:
        assert "device" in _opts(name), name
    data_commands = typer.main.get_command(app).commands["data"].commands
    for cmd in (COMMANDS["train"], *(data_commands[n] for n in ("info", "verify", "preview"))):
        opts = {p.name: list(p.opts) for p in cmd.params}  # the features of datasets flexwm did not write
        assert (opts["camera"], opts["action_key"], opts["state_key"]) == (
            ["--camera"], ["--action-key"], ["--state-key"]), cmd.name
    for name in ("collect", "train", "train-bc", "eval", "improve", "steer-wam", "evaluate-policies", "calibrate",
                 "tune-head"):
        assert "seed" in _opts(name), name
    for name in ("collect", "train", "train-bc", "eval", "improve", "steer-wam", "evaluate-policies", "calibrate",
                 "tune-head", "export", "report", "demo"):
        assert "out" in _opts(name), name


def test_task_and_tasks_both_work(tmp_path):
    for flag in ("--task", "--tasks"):
        r = CliRunner().invoke(app, ["collect", flag, "no-such-task", "--out", str(tmp_path / flag)])
        assert r.exit_code != 0 and "unknown metaworld task" in str(r.exception)


needs_no_cuda = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")


@needs_no_cuda
@pytest.mark.parametrize("argv", [
    ["eval", "--ckpt", str(DEMO), "--device", "cuda", "--out", "o.json"],
    ["evaluate-policies", "--ckpt", str(DEMO), "--suite", "s.yaml", "--task", "reach-v3", "--device", "cuda"],
    ["calibrate", "--ckpt", str(DEMO), "--device", "cuda"],
    ["tune-head", "--ckpt", str(DEMO), "--out", "o", "--device", "cuda"],
    ["improve", "--bc", "b", "--task", "reach-v3", "--out", "o", "--real", "--device", "cuda"],
    ["steer-wam", "--ckpt", str(DEMO), "--task", "reach-v3", "--out", "o", "--device", "cuda:0"],
    ["train-bc", "--data", "d", "--out", "o", "--device", "cuda"],
    ["train", "--data", "d", "--out", "o", "--device", "cuda"],
    ["train", "--data", "d", "--out", "o", "--preset", "gpu"],
    ["report", "r", "--device", "cuda"],
    ["demo", "--out", "o", "--device", "cuda"],
])
def test_cuda_without_cuda_is_a_clear_error(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError), r.output
    assert "no GPU" in str(r.exception) and "cpu" in str(r.exception)
    assert not (tmp_path / "o").exists()


@needs_no_cuda
def test_train_preset_gpu_on_a_cpu_machine_says_so_without_a_traceback(tmp_path):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", "train", "--data", str(tmp_path / "d"), "--out",
                        str(tmp_path / "run"), "--preset", "gpu"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "preset 'gpu'" in r.stderr and "no GPU" in r.stderr and "--preset cpu" in r.stderr


@needs_no_cuda
def test_loading_on_cuda_without_cuda_is_a_clear_error():
    import flexwm

    with pytest.raises(ConfigError, match="no GPU"):
        flexwm.load(DEMO, device="cuda")


TRAINING_COMMANDS = ("train", "train-bc", "improve", "steer-wam")


def test_tensorboard_is_an_opt_in_option_of_every_training_command():
    for name in TRAINING_COMMANDS:
        params = {p.name: p for p in COMMANDS[name].params}
        assert params["tensorboard"].opts == ["--tensorboard"] and params["tensorboard"].default is False, name
        assert params["tensorboard_dir"].opts == ["--tensorboard-dir"], name
        assert params["tensorboard_dir"].default is None, name


def test_train_bc_tensorboard_writes_the_loss_curve(tmp_path):
    from tests.helpers.toy_training_data import write_toy_dataset
    from tests.helpers.tracking import read_scalars

    data = write_toy_dataset(tmp_path / "toy", n=3)
    base = ["train-bc", "--data", str(data), "--preset", "tiny", "--steps", "12", "--batch-size", "4"]
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "plain" / "tensorboard").exists()  # off by default
    pytest.importorskip("tensorboard")
    r = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bc"), "--tensorboard"])
    assert r.exit_code == 0, r.output
    scalars = read_scalars(tmp_path / "bc" / "tensorboard")
    assert sorted(scalars) == ["loss", "lr"] and [s for s, _ in scalars["loss"]] == [10, 12]
    assert all(v == pytest.approx(3e-4) for _, v in scalars["lr"])
    # logging does not change training: the same losses with and without it
    info = [json.loads((tmp_path / d / "train_info.json").read_text()) for d in ("plain", "bc")]
    assert info[0]["losses"] == info[1]["losses"] and info[0]["loss_last_50"] == info[1]["loss_last_50"]


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_tensorboard_without_its_package_fails_before_any_work(command, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    argv = {"train": ["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")],
            "train-bc": ["train-bc", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")],
            "improve": ["improve", "--bc", str(tmp_path / "b"), "--task", "reach-v3", "--out", str(tmp_path / "o"),
                        "--real"],
            "steer-wam": ["steer-wam", "--ckpt", str(DEMO), "--task", "reach-v3", "--out", str(tmp_path / "o")]}
    r = CliRunner().invoke(app, [*argv[command], "--tensorboard"])
    assert isinstance(r.exception, ConfigError) and "pip install tensorboard" in str(r.exception), r.output
    assert not (tmp_path / "o").exists()
