"""kill -9 while writing: every completed episode survives intact and the writer resumes contiguously."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from flexwm.data import DatasetWriter, FlexDataset, verify
from tests.helpers.paths import REPO
from tests.helpers.synth_data import SCHEMA, make_episode


def _kill_mid_write(root: Path, seed: int, at_least: int) -> None:
    """Start the writer loop (it resumes an existing dataset) and SIGKILL it at a random moment after the
    dataset holds `at_least` episodes."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.synth_data", str(root), "1000"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    meta = root / "meta" / "episodes"
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if len(list(meta.glob("chunk-*/file-*.parquet"))) >= at_least:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        else:
            raise AssertionError(f"the writer did not reach {at_least} episodes within 60 s")
        time.sleep(random.Random(seed).uniform(0.0, 0.25))  # a random point in the write loop
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def test_kill9_keeps_completed_episodes_and_resume_continues(tmp_path):
    root = tmp_path / "ds"
    seed = int(os.environ.get("FLEXWM_KILL_SEED", random.randrange(1 << 30)))  # set it to replay a failure
    n = 0
    for k in range(3):  # after the first round the helper resumes the killed dataset, then is killed again
        _kill_mid_write(root, seed + k, at_least=n + 2)
        ds = FlexDataset(root)
        assert len(ds) >= n + 2, (seed, k, n, len(ds))
        n = len(ds)
        report = verify(root)
        assert report["damaged"] == [] and report["ok"] == n, (seed, k, report)
    for i in range(n):  # every episode the reader lists is complete and exactly what was written
        got, want = ds.load_episode(i), make_episode(i)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.state, want.state)
        assert got.frames.shape == want.frames.shape and got.meta == want.meta

    with DatasetWriter(root, **SCHEMA) as writer:
        assert writer.num_episodes == n
        assert [writer.add(make_episode(i)) for i in range(n, n + 3)] == [n, n + 1, n + 2]
    ds = FlexDataset(root)
    assert [e["episode_index"] for e in ds.episodes] == list(range(n + 3))
    assert ds.num_frames == sum(make_episode(i).length for i in range(n + 3))
    assert ds.meta["total_episodes"] == n + 3
    report = verify(root)
    assert report["damaged"] == [] and report["notes"] == [], report  # orphans cleaned, info.json fresh
    np.testing.assert_array_equal(ds.load_episode(n + 1).actions, make_episode(n + 1).actions)
