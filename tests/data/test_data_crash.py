"""kill -9 while writing: every completed episode survives intact, packed files are never half-written, and the
writer resumes contiguously, whether the kill lands in an episode's write or in the packing of a full file."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import flexwm.data.writer as writer_module
from flexwm.data import DatasetWriter, FlexDataset, verify
from flexwm.data.lerobot import INFO_PATH, STAGING_DIR
from flexwm.data.reader import find_packed_orphans
from tests.helpers.paths import REPO
from tests.helpers.synth_data import SCHEMA, make_episode

MB = 0.02  # a packed file rolls over every 3-4 episodes of tests.helpers.synth_data


def _total(root: Path) -> int:
    import json

    try:
        return int(json.loads((root / INFO_PATH).read_text())["total_episodes"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_mid_write(root: Path, seed: int, at_least: int) -> None:
    """Start the writer loop (it resumes an existing dataset) and SIGKILL it at a random moment after the
    dataset holds `at_least` episodes."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.synth_data", str(root), "1000", str(MB)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if _total(root) >= at_least:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        else:
            raise AssertionError(f"the writer did not reach {at_least} episodes within 60 s")
        time.sleep(random.Random(seed).uniform(0.0, 0.4))  # a random point in the write loop
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _assert_episodes(ds: FlexDataset, n: int) -> None:
    for i in range(n):  # every episode the reader lists is complete and exactly what was written
        got, want = ds.load_episode(i), make_episode(i)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.state, want.state)
        assert got.frames.shape == want.frames.shape and got.meta == want.meta


@pytest.mark.slow
def test_kill9_keeps_completed_episodes_and_resume_continues(tmp_path):
    root = tmp_path / "ds"
    seed = int(os.environ.get("FLEXWM_KILL_SEED", random.randrange(1 << 30)))  # set it to replay a failure
    n = 0
    for k in range(3):  # after the first round the helper resumes the killed dataset, then is killed again
        _kill_mid_write(root, seed + k, at_least=n + 5)
        ds = FlexDataset(root)
        assert len(ds) >= n + 5, (seed, k, n, len(ds))
        n = len(ds)
        report = verify(root)
        assert report["damaged"] == [] and report["ok"] == n, (seed, k, report)
    _assert_episodes(ds, n)

    with DatasetWriter(root, **SCHEMA) as writer:
        assert writer.num_episodes == n
        assert [writer.add(make_episode(i)) for i in range(n, n + 3)] == [n, n + 1, n + 2]
    ds = FlexDataset(root)
    assert [e["episode_index"] for e in ds.episodes] == list(range(n + 3))
    assert ds.num_frames == sum(make_episode(i).length for i in range(n + 3))
    assert ds.meta["total_episodes"] == n + 3
    assert not any(e.get("staged") for e in ds.episodes) and not list((root / STAGING_DIR).glob("*"))
    assert len(list((root / "data").rglob("*.parquet"))) >= 3  # packed into several files, each of many episodes
    report = verify(root)
    assert report["damaged"] == [] and report["notes"] == [], report  # orphans cleaned, info.json fresh
    np.testing.assert_array_equal(ds.load_episode(n + 1).actions, make_episode(n + 1).actions)


class _Crash(BaseException):
    """Stands for the process dying at this point (not an Exception: nothing may catch it and go on)."""


@pytest.mark.slow
def test_a_crash_at_every_write_and_removal_loses_nothing_committed(tmp_path, monkeypatch):
    """Deterministic companion of the kill -9 test: the writer dies before its k-th file write or file removal,
    for every k of a run that packs several files, leaving a temp file as a kill mid-write does. After each crash
    the dataset reads back every episode `add` had returned, undamaged, and a resumed writer completes it."""
    schema = {**SCHEMA, "image_size": (16, 16), "data_files_size_in_mb": 0.01, "video_files_size_in_mb": 0.01}
    n_eps, first = 5, 2
    base = tmp_path / "base"  # episodes 0, 1 already packed; the crashing writer adds 2, 3, 4 and closes
    with DatasetWriter(base, **schema) as w:
        for i in range(first):
            w.add(make_episode(i, h=16, w=16))
    real_write, real_unlink = writer_module.atomic_write, Path.unlink
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what this test checks: speed
    k, steps = 0, {"n": 0}

    def step(path: Path) -> None:
        steps["n"] += 1
        if steps["n"] == k + 1:
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / f".{path.name}.crash.tmp").write_bytes(b"half-written")
            raise _Crash(path)

    def write(path, fn):
        step(Path(path))
        real_write(path, fn)

    def unlink(self, missing_ok=False):
        if STAGING_DIR in str(self) and not self.name.endswith(".tmp"):
            step(self)
        real_unlink(self, missing_ok=missing_ok)

    def check(ds: FlexDataset, n: int) -> None:
        for i in range(n):
            np.testing.assert_array_equal(ds.load_columns(i)["action"], make_episode(i).actions)
            assert ds.episodes[i]["extra"] == make_episode(i).meta.extra

    while True:
        root = tmp_path / f"k{k}"
        shutil.copytree(base, root)
        steps["n"], done, crashed = 0, first, False
        with monkeypatch.context() as m:
            m.setattr(writer_module, "atomic_write", write)
            m.setattr(Path, "unlink", unlink)
            w = None
            try:
                w = DatasetWriter(root, **schema)  # a resume: it cleans up and rewrites info.json
                for i in range(first, n_eps):
                    w.add(make_episode(i, h=16, w=16))
                    done += 1
                w.close()
            except _Crash:
                crashed = True
            finally:
                if w is not None:
                    w._release()  # the process is gone, and with it its lock
                    w._closed = True
        if not crashed:
            break
        ds = FlexDataset(root)
        assert done <= len(ds) <= done + 1, (k, done, len(ds))  # + 1: died after the commit, before returning
        check(ds, len(ds))
        assert verify(root)["damaged"] == [], k
        with DatasetWriter(root, **schema) as w2:
            for i in range(w2.num_episodes, n_eps):
                w2.add(make_episode(i, h=16, w=16))
        ds = FlexDataset(root)
        assert len(ds) == n_eps and not any(e.get("staged") for e in ds.episodes), k
        check(ds, n_eps)
        assert find_packed_orphans(root, ds.episodes) == [], k  # the leftovers of the crash are removed
        k += 1
    assert k >= 25 and len(list((root / "data").rglob("*.parquet"))) >= 2, k
    report = verify(root)
    assert report["damaged"] == [] and report["notes"] == [], report


@pytest.mark.parametrize("n_eps", [3, 7])
def test_staged_episodes_of_an_unfinished_dataset_are_read_and_packed_on_resume(tmp_path, n_eps):
    root = tmp_path / "ds"
    w = DatasetWriter(root, **SCHEMA, data_files_size_in_mb=MB, video_files_size_in_mb=MB)
    for i in range(n_eps):
        w.add(make_episode(i))
    w._release()  # abandoned without close: some episodes are still staged
    w._closed = True
    ds = FlexDataset(root)
    assert len(ds) == n_eps and any(e.get("staged") for e in ds.episodes)
    _assert_episodes(ds, n_eps)
    DatasetWriter(root, **SCHEMA).close()
    ds = FlexDataset(root)
    assert len(ds) == n_eps and not any(e.get("staged") for e in ds.episodes)
    _assert_episodes(ds, n_eps)
