"""The headline benchmark end to end at the tiny preset: every stage runs on the real simulator, the summary
holds each variant's numbers, and a rerun skips the finished stages and gives the same summary."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.paths import BENCHMARKS

BENCH = BENCHMARKS / "bench.py"
ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_bench_tiny(tmp_path):
    out = tmp_path / "bench_tiny.json"
    cmd = [sys.executable, str(BENCH), "--preset", "tiny", "--data", tmp_path / "data", "--prefix", tmp_path / "b",
           "--tasks", "reach-v3", "--collect-episodes", "10", "--collect-max-steps", "60", "--steps", "12",
           "--bc-steps", "20", "--episodes", "1", "--max-steps", "16", "--pe-task", "reach-v3", "--pe-episodes", "1",
           "--pe-horizon", "16", "--ac-episodes", "2", "--jobs", "2", "--skip", "speed", "--rl-variants", "flexible",
           "--rl-tasks", "reach-v3", "--rl-episodes", "1", "--rl-bc-steps", "20", "--rl-set", "iterations=1",
           "--rl-set", "starts=2", "--rl-set", "samples=2", "--rl-set", "max_steps=16", "--rl-set", "updates=2",
           "--out", out]
    r = subprocess.run(list(map(str, cmd)), env=ENV, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["rows"]
    for v in ("flexible", "ac-only", "wam-only"):
        assert rows[v]["wam_success"]["pooled"]["episodes"] == 1 and rows[v]["hybrid_success"]
        assert rows[v]["train_steps"] == 12  # summary.json of a finished run
    for v in ("flexible", "ac-only"):
        assert rows[v]["cem_success"] and "mmrv" in rows[v]["policy_eval"]
    assert "cem_success" not in rows["wam-only"] and "policy_eval" not in rows["wam-only"]
    assert rows["bc"]["bc_success"]["pooled"]["episodes"] == 1
    assert rows["flexible"]["rl_gain"]["episodes_per_task"] == 1 and rows["ac-only"]["rl_gain"] is None
    assert rows["random"]["random_success"]["pooled"]["episodes"] == 1
    assert set(json.loads(Path(res["files"]["ac_error"]).read_text())["runs"]) == {"flexible", "ac-only", "wam-only"}
    assert "| flexible |" in r.stdout and res["machine"]["cpu_count"]
    # a rerun trains, collects and evaluates nothing again and reports the same numbers
    start = time.perf_counter()
    r2 = subprocess.run(list(map(str, cmd)), env=ENV, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert time.perf_counter() - start < 60 and "flexwm.cli train" not in r2.stdout
    assert json.loads(out.read_text())["rows"] == rows
