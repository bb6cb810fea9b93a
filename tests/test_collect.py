"""End-to-end collection on the real simulator: CLI, resume after kill -9, bad input."""

import os
import signal
import subprocess
import sys
import time

import pytest

from flexwm.collect import CollectConfig, collect, plan_jobs
from flexwm.errors import ConfigError, DatasetError

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def _cfg(**kw):
    base = dict(env="metaworld", tasks=["reach-v3"], sources=["expert", "noisy", "play"], episodes=1,
                noise=[1.0], max_steps=20, workers=1)
    return CollectConfig(**{**base, **kw})


def test_collect_writes_all_sources_and_outcomes(tmp_path):
    from flexwm.data import FlexDataset

    summary = collect(_cfg(), tmp_path / "ds", progress=False)
    assert summary["written"] == 3
    ds = FlexDataset(tmp_path / "ds")
    metas = ds.episodes
    assert sorted(m["source"] for m in metas) == ["expert", "noisy", "play"]
    play = [m for m in metas if m["source"] == "play"][0]
    assert play["outcome"] == "play" and play["instruction"] == ""
    noisy = [m for m in metas if m["source"] == "noisy"][0]
    assert noisy["noise"] == 1.0 and noisy["outcome"] in ("success", "failure")
    ep = ds.load_episode(0)
    assert ep.frames.shape == (20, 64, 64, 3) and ep.actions.shape == (20, 4)


def test_existing_output_needs_resume_and_resume_skips_done(tmp_path):
    collect(_cfg(sources=["expert"]), tmp_path / "ds", progress=False)
    with pytest.raises(DatasetError, match="--resume"):
        collect(_cfg(sources=["expert"]), tmp_path / "ds", progress=False)
    s = collect(_cfg(sources=["expert", "play"]), tmp_path / "ds", resume=True, progress=False)
    assert s["skipped"] == 1 and s["written"] == 1


def test_unknown_task_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown metaworld task.*door-opn-v3.*did you mean 'door-open-v3'"):
        collect(_cfg(tasks=["door-opn-v3"]), tmp_path / "ds", progress=False)


def test_job_plan_is_deterministic():
    a = plan_jobs(_cfg(tasks=["reach-v3", "door-open-v3"], episodes=3, noise=[0.1, 0.5]))
    assert a == plan_jobs(_cfg(tasks=["reach-v3", "door-open-v3"], episodes=3, noise=[0.1, 0.5]))
    assert len(a) == 2 * (3 + 2 * 3 + 3) and len({j.job_id for j in a}) == len(a)


@pytest.mark.slow
def test_kill9_during_parallel_collection_then_resume(tmp_path):
    from flexwm.data import FlexDataset, verify

    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "flexwm.cli", "collect", "--tasks", "reach-v3,button-press-v3", "--source",
           "expert,play", "--episodes", "3", "--max-steps", "30", "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        # saved episodes: staged ones (meta/staging/*.meta.parquet) until their packed file is written
        staged = list((out / "meta" / "staging").glob("*.meta.parquet")) if (out / "meta").exists() else []
        if len(staged) >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-collection
    proc.wait()
    n_before = len(FlexDataset(out))
    assert 2 <= n_before < 12
    r = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ds = FlexDataset(out)
    assert len(ds) == 12
    assert sorted(m["episode_index"] for m in ds.episodes) == list(range(12))
    report = verify(out)
    assert not report.get("damaged"), report


def test_cli_reports_bad_input_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flexwm.cli", "collect", "--tasks", "no-such-task", "--out",
                        str(tmp_path / "x")], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown metaworld task" in r.stderr and "Traceback" not in r.stderr
