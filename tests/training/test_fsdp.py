"""FSDP2 training through torchrun with 2 CPU processes (gloo) on the tiny preset: the same loss curve and weights
as one process, and a kill -9 of both processes after a checkpoint, resumed, ends with the weights of an
uninterrupted run. The data mixes two embodiments, one rare, so a process often holds none or one row of a group."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flexwm.errors import ConfigError
from flexwm.metrics import read_metrics
from flexwm.runs import find_latest
from flexwm.training.distributed import Shard, check_launch
from flexwm.training.run import run_config, train_world_model
from tests.helpers.toy_training_data import write_toy_dataset

SETTINGS = ["--set", "tokenizer.image_size=32", "--set", "tokenizer_steps=5", "--set", "train.steps=6",
            "--set", "train.ckpt_every=3", "--set", "train.log_every=1", "--set", "train.num_threads=1"]

TIMEOUT_S = 900  # ~40 s on an idle 2-core machine; generous for shared, loaded ones


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _torchrun(data: list[Path], out: Path, *extra: str) -> list[str]:
    args = [a for d in data for a in ("--data", str(d))]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "flexwm.cli",
            "train", *args, "--preset", "tiny", "--out", str(out), *SETTINGS, "--set", "train.distributed=fsdp",
            *extra]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(find_latest(run) / "model.safetensors"))


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    data = [write_toy_dataset(root / "toy", n=12), write_toy_dataset(root / "rare", n=2, embodiment="rare")]
    overrides = [s for s in SETTINGS if s != "--set"]
    one = train_world_model(run_config("tiny", data=data, overrides=overrides), root / "one", progress=False)
    subprocess.run(_torchrun(data, root / "two"), check=True, env=_env(), capture_output=True, timeout=TIMEOUT_S)
    return {"root": root, "data": data, "one": one.parent.parent, "two": root / "two"}


@pytest.mark.slow
def test_two_fsdp_processes_train_as_one_process(runs):
    one, two = runs["one"], runs["two"]
    la, lb = _losses(one), _losses(two)
    assert [s for s, _ in la] == [s for s, _ in lb] == list(range(1, 7))
    assert [v for _, v in lb] == pytest.approx([v for _, v in la], rel=1e-5)
    wa, wb = _weights(one), _weights(two)
    assert wa.keys() == wb.keys() and "adapters.rare.token" in wa
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)
    ts = find_latest(two) / "training_state"
    assert len(list((ts / "sharded").glob("*.safetensors"))) == 2 and len(list((ts / "rng").glob("*.json"))) == 2
    assert {p.suffix for p in find_latest(two).rglob("*") if p.is_file()} <= {".safetensors", ".json"}


@pytest.mark.slow
def test_fsdp_kill9_after_a_checkpoint_then_resume_equals_uninterrupted(runs):
    run = runs["root"] / "killed"
    cmd = _torchrun(runs["data"], run, "--resume")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest, deadline = run / "checkpoints" / "latest.json", time.time() + TIMEOUT_S
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
    proc.wait()
    assert json.loads(latest.read_text())["step"] < 6
    subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=TIMEOUT_S)
    wa, wb = _weights(runs["two"]), _weights(run)
    assert find_latest(run).name == "step-00000006"
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _losses(run) == _losses(runs["two"])


def test_fsdp_without_torchrun_says_how_to_launch(monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    check_launch("ddp", ["flexwm", "train"])  # one process: nothing to check
    with pytest.raises(ConfigError, match=r"torchrun --nproc_per_node=NUM_GPUS -m flexwm.cli train --data d "
                                          r"--set train.distributed=fsdp"):
        check_launch("fsdp", ["flexwm", "train", "--data", "d", "--set", "train.distributed=fsdp"])
    cfg = run_config("tiny", data=["unused"], overrides=["train.distributed=fsdp"])
    with pytest.raises(ConfigError, match="--rdzv-endpoint"):
        train_world_model(cfg, Path("/nonexistent/run"))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_partition_every_group(world):
    for n in range(10):
        parts = [list(range(n))[Shard(r, world).rows(n)] for r in range(world)]
        assert sum(parts, []) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.slow
def test_fsdp_bf16_with_activation_checkpointing_trains_and_resumes(runs, monkeypatch):
    """bf16 parameters (MixedPrecisionPolicy) and per-block activation checkpointing, as one torchrun process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    overrides = [s for s in SETTINGS if s != "--set"] + [
        f"tokenizer_path={runs['one'] / 'tokenizer'}", "train.distributed=fsdp", "train.amp=bf16",
        "train.activation_checkpointing=true", "train.steps=4", "train.ckpt_every=2"]
    cfg = run_config("tiny", data=runs["data"], overrides=overrides)
    run = runs["root"] / "bf16"
    try:
        train_world_model(cfg, run, progress=False, until=2)
        train_world_model(cfg, run, progress=False, resume=True)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    losses = [v for _, v in _losses(run)]
    assert len(losses) == 4 and all(map(lambda v: v == v and abs(v) < 1e3, losses))
    weights = _weights(run)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())  # fp32 masters
