"""Training from a latent cache larger than the memory the process may use.

    python benchmarks/memory.py --cache-gb 3 --limit-mb 1200 --out benchmarks/results/memory.json

1. Builds a synthetic latent cache of `--cache-gb` with flexwm's own `build_latent_cache` (a stand-in dataset
   and tokenizer: only the cache's size matters here, not its content).
2. In a child process confined by a Linux memory cgroup to `--limit-mb` (no swap on this machine), reads every
   training window once through `get_windows` (a full epoch) and then runs `--steps` optimisation steps of a
   FlexWorldModel with flex_loss and flexwm's Trainer (checkpoints included), batches drawn from the cache.
3. Control: the same child told to load the cache into memory first must be killed by the limit; otherwise the
   limit did not bind and the run proves nothing (the result says so).

Needs root and a writable cgroup (v1 `memory` or v2 with the memory controller); otherwise it reports why it
cannot run. Writes JSON with the cache size, the limit, peak memory of the cgroup and of the child, and timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

LATENT_SHAPE = (16, 32, 32)  # 32 KiB a frame in float16: a big cache from few frames
EP_LEN = 200


class _Episode:
    def __init__(self, n: int):
        self.frames = np.zeros((n, 8, 8, 3), np.uint8)


class SyntheticDataset:
    """Duck-typed dataset for build_latent_cache: only lengths and blank frames."""

    image_size = (8, 8)

    def __init__(self, n_episodes: int):
        self.episodes = [{"length": EP_LEN, "episode_index": i} for i in range(n_episodes)]
        self.root = "synthetic"

    def __len__(self) -> int:
        return len(self.episodes)

    def load_episode(self, i: int) -> _Episode:
        return _Episode(EP_LEN)


class SyntheticTokenizer:
    """Random latents of LATENT_SHAPE (seeded per call count)."""

    training = False

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "synthetic-" + "x".join(map(str, LATENT_SHAPE))

    def latent_shape(self, image_size: Any) -> tuple[int, int, int]:
        return LATENT_SHAPE

    def encode(self, frames: Any) -> Any:
        import torch

        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        return torch.randn(len(frames), *LATENT_SHAPE, generator=g)

    def to(self, device: Any) -> SyntheticTokenizer:
        return self

    def eval(self) -> SyntheticTokenizer:
        return self

    def train(self, mode: bool = True) -> SyntheticTokenizer:
        return self


def build_cache(cache_dir: Path, gigabytes: float) -> dict:
    from flexwm.models.latent_cache import build_latent_cache

    frame_bytes = int(np.prod(LATENT_SHAPE)) * 2
    n_eps = max(2, int(gigabytes * 2**30 / (frame_bytes * EP_LEN)))
    t0 = time.perf_counter()
    cache = build_latent_cache(SyntheticDataset(n_eps), SyntheticTokenizer(), cache_dir, episodes_per_shard=8,
                               progress=False)
    size = sum(p.stat().st_size for p in cache_dir.glob("shard-*.npy"))
    evict_page_cache(cache_dir)
    return {"episodes": n_eps, "frames": int(cache.lengths.sum()), "bytes": size, "build_s": time.perf_counter() - t0}


def evict_page_cache(cache_dir: Path) -> None:
    """Drop the shards from the page cache, so the confined child's reads are charged to its own cgroup."""
    for path in cache_dir.glob("shard-*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---- the confined child ------------------------------------------------------------------------------------


def child(cache_dir: Path, run_dir: Path, steps: int, load_in_memory: bool) -> dict:
    import torch

    from flexwm.models import flow
    from flexwm.models.latent_cache import LatentCache, get_windows
    from flexwm.models.world_model import FlexWorldModel, preset
    from flexwm.training.loop import TrainConfig, Trainer

    torch.set_num_threads(2)
    cache = LatentCache(cache_dir)
    if load_in_memory:  # the control: what a loader that reads everything into RAM would do
        held = [np.array(cache._shard(s)) for s in range(len(cache.manifest["shards"]))]
        return {"loaded_bytes": int(sum(h.nbytes for h in held))}
    cfg = preset("tiny", latent_shape=LATENT_SHAPE, patch_size=8, action_horizon=4, frame_stride=2,
                 embodiments={"synthetic": {"action_dim": 2, "proprio_dim": 2}})
    index = np.array([(0, i, t) for i in range(len(cache)) for t in range(0, int(cache.lengths[i]) - 1)])

    # a full epoch of windows, read in order
    t0 = time.perf_counter()
    total = 0.0
    for s in range(0, len(index), 256):
        w = get_windows(cache, index[s : s + 256], cfg.context_frames, cfg.action_horizon, cfg.frame_stride)
        total += float(w["future"][:, :, 0, 0, 0].sum())
    epoch_s = time.perf_counter() - t0

    def make_batch(idx: torch.Tensor) -> dict:
        rows = index[idx.numpy()]
        w = get_windows(cache, rows, cfg.context_frames, cfg.action_horizon, cfg.frame_stride)
        B = len(rows)
        return {"context": torch.from_numpy(w["context"]), "future": torch.from_numpy(w["future"]),
                "actions": torch.zeros(B, cfg.action_horizon, 2), "proprio": torch.zeros(B, 2),
                "text": torch.zeros(B, cfg.text_dim), "has_text": torch.zeros(B, dtype=torch.bool),
                "success": torch.zeros(B), "progress": torch.zeros(B), "outcome": torch.full((B,), 2),
                "embodiment": "synthetic", "valid": torch.ones(B, cfg.action_horizon, dtype=torch.bool)}

    def loss_fn(net: Any, batch: dict, g: torch.Generator) -> Any:
        modes = flow.sample_modes(len(batch["outcome"]), batch["outcome"], cfg, g)
        return flow.flex_loss(net, batch, modes, g)

    torch.manual_seed(0)
    model = FlexWorldModel(cfg)
    tcfg = TrainConfig(steps=steps, batch_size=32, ckpt_every=max(1, steps // 2), log_every=max(1, steps // 4),
                       warmup_steps=2, num_threads=2)
    t1 = time.perf_counter()
    trainer = Trainer(model, loss_fn, make_batch, len(index), tcfg, run_dir, {"model": {}}, progress=False)
    from flexwm.metrics import MetricsLogger

    with MetricsLogger(run_dir / "metrics.jsonl") as logger:
        trainer.fit(logger)
    return {"windows_read": len(index), "epoch_read_s": epoch_s, "train_steps": steps,
            "train_s": time.perf_counter() - t1, "checksum": total,
            "child_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- cgroup ------------------------------------------------------------------------------------------------


def cgroup_memory_root() -> tuple[Path, str] | None:
    """(directory to create cgroups in, 'v1' | 'v2') when this process may create a memory cgroup."""
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return v1, "v1"
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.subtree_control").read_text() \
            and os.access(v2, os.W_OK):
        return v2, "v2"
    return None


def run_confined(limit_mb: int, argv: list[str], timeout: float = 1200) -> dict:
    found = cgroup_memory_root()
    if found is None:
        raise RuntimeError("no writable memory cgroup (needs root and cgroup v1 memory or v2 with the memory "
                           "controller enabled)")
    root, kind = found
    cg = root / f"flexwm-memtest-{os.getpid()}-{time.monotonic_ns()}"
    cg.mkdir()
    try:
        limit = str(limit_mb * 2**20)
        if kind == "v1":
            (cg / "memory.limit_in_bytes").write_text(limit)
            if (cg / "memory.memsw.limit_in_bytes").exists():
                (cg / "memory.memsw.limit_in_bytes").write_text(limit)
        else:
            (cg / "memory.max").write_text(limit)
            (cg / "memory.swap.max").write_text("0")
        procs = cg / "cgroup.procs"

        def enter() -> None:
            procs.write_text(str(os.getpid()))

        t0 = time.perf_counter()
        p = subprocess.run(argv, preexec_fn=enter, capture_output=True, text=True, timeout=timeout)
        peak_file = cg / ("memory.max_usage_in_bytes" if kind == "v1" else "memory.peak")
        peak = int(peak_file.read_text()) if peak_file.exists() else None
        oom = None
        if kind == "v1" and (cg / "memory.oom_control").exists():
            oom = "oom_kill " in (cg / "memory.oom_control").read_text() and int(
                (cg / "memory.oom_control").read_text().split("oom_kill ")[-1].split()[0]) > 0
        out = {"returncode": p.returncode, "wall_s": time.perf_counter() - t0,
               "cgroup_peak_mb": None if peak is None else peak / 2**20, "oom_killed": oom,
               "stderr_tail": p.stderr[-1500:]}
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if line:
            out["child"] = json.loads(line[-1])
        return out
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def measure(work: Path, cache_gb: float, limit_mb: int, steps: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cache_dir = work / "cache"
    info = build_cache(cache_dir, cache_gb)
    me = [sys.executable, str(Path(__file__).resolve()), "--child", str(cache_dir), "--work", str(work)]
    ok = run_confined(limit_mb, [*me, "--steps", str(steps)])
    evict_page_cache(cache_dir)
    control = run_confined(limit_mb, [*me, "--steps", "1", "--load-in-memory"])
    return {"cache": info, "cache_mb": info["bytes"] / 2**20, "limit_mb": limit_mb,
            "streamed": ok, "control_load_in_memory": control,
            "limit_binds": control["returncode"] != 0,
            "streamed_ok": ok["returncode"] == 0 and "child" in ok}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-gb", type=float, default=3.0)
    p.add_argument("--limit-mb", type=int, default=1200)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--work", default="/tmp/flexwm-memory")
    p.add_argument("--out", default="benchmarks/results/memory.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--load-in-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run = Path(args.work) / ("run-control" if args.load_in_memory else "run")
        if run.exists():
            import shutil

            shutil.rmtree(run)
        print(json.dumps(child(Path(args.child), run, args.steps, args.load_in_memory)))
        return
    from common import write_result

    res = measure(Path(args.work), args.cache_gb, args.limit_mb, args.steps)
    print(json.dumps({k: v for k, v in res.items() if k not in ("streamed", "control_load_in_memory")}, indent=1))
    print(f"wrote {write_result(args.out, res)}")


if __name__ == "__main__":
    main()
