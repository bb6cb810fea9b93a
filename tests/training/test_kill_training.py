"""kill -9 at random moments of `flexwm train` (tokenizer, latent cache, steps, checkpoint writes), then
--resume: every checkpoint left behind opens, and the finished run equals an uninterrupted one bit for bit."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from flexwm.metrics import read_metrics
from flexwm.runs import find_latest
from flexwm.training.checkpoint import load_checkpoint
from tests.helpers.toy_training_data import write_toy_dataset

pytestmark = pytest.mark.slow

SETTINGS = ["--set", "tokenizer.image_size=32", "--set", "train.steps=90", "--set", "train.ckpt_every=3",
            "--set", "train.log_every=1", "--set", "train.num_threads=1"]


def _cmd(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "flexwm.cli", "train", "--data", str(data), "--preset", "tiny", "--out", str(out),
            *SETTINGS, "--resume"]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_kill9_during_training_then_resume_equals_uninterrupted(tmp_path):
    data = write_toy_dataset(tmp_path / "toy")
    t0 = time.perf_counter()
    subprocess.run(_cmd(data, tmp_path / "ref"), check=True, env=_env(), capture_output=True)
    full_s = time.perf_counter() - t0

    run = tmp_path / "killed"
    rng = random.Random(0)

    def rows() -> int:
        m = run / "metrics.jsonl"
        return len(read_metrics(m)) if m.exists() else 0

    # kill points spread over the run: during tokenizer training / latent caching, then at growing step counts;
    # a random delay after each trigger lands the kill inside a step or a checkpoint write (ckpt_every = 3)
    triggers = [lambda: True, lambda: (run / "tokenizer").is_dir(), lambda: rows() >= 10, lambda: rows() >= 35,
                lambda: rows() >= 60, lambda: rows() >= 80]
    kills, landed_in_training = 0, 0
    for trigger in triggers:
        proc = subprocess.Popen(_cmd(data, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not trigger() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:  # finished before the kill
            break
        before = rows()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        landed_in_training += before > 0
        latest = find_latest(run)
        if latest is not None:  # whatever the moment, the newest complete checkpoint opens
            load_checkpoint(latest)
    assert kills >= 4 and landed_in_training >= 3, (kills, landed_in_training, full_s)
    subprocess.run(_cmd(data, run), check=True, env=_env(), capture_output=True)

    a, b = find_latest(tmp_path / "ref"), find_latest(run)
    assert a.name == b.name == "step-00000090"
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    la = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "ref" / "metrics.jsonl")]
    lb = [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl")]
    assert la == lb and len(la) == 90
    assert json.loads((run / "run_config.json").read_text()) == json.loads(
        (tmp_path / "ref" / "run_config.json").read_text())
