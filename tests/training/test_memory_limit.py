"""Training streams from memory-mapped latents: a cache larger than the process's memory limit still trains.

Runs benchmarks/memory.py's measurement at a small scale: a 1 GiB latent cache, a child process confined to
600 MiB by a memory cgroup reads a full epoch of windows and takes optimisation steps; the control child that
loads the cache into memory must be killed by the same limit (or the test proves nothing). Skipped where no
memory cgroup can be created (not root, or cgroups read-only).
"""

import pytest

from tests.helpers.benchmark_scripts import load_benchmark

memory = load_benchmark("memory")

pytestmark = pytest.mark.slow


@pytest.mark.skipif(memory.cgroup_memory_root() is None, reason="needs a writable memory cgroup (root)")
def test_cache_larger_than_the_memory_limit_trains(tmp_path):
    res = memory.measure(tmp_path, cache_gb=1.0, limit_mb=600, steps=3)
    assert res["cache_mb"] > res["limit_mb"] * 1.5
    assert res["limit_binds"], f"the control that loads everything was not killed: {res['control_load_in_memory']}"
    ok = res["streamed"]
    assert ok["returncode"] == 0, ok["stderr_tail"]
    child = ok["child"]
    assert child["windows_read"] == res["cache"]["frames"] - res["cache"]["episodes"]  # a full epoch of windows
    assert child["train_steps"] == 3
    assert (tmp_path / "run" / "checkpoints").is_dir()
