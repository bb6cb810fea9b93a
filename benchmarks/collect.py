"""Collection benchmark: simulator speed with and without tuned rendering, collection throughput with 1 and 2
workers, and scripted-expert success on the 11 AVDC Meta-World tasks (64x64).

    python benchmarks/collect.py --out benchmarks/results/collect.json [--episodes 50]
    python benchmarks/collect.py --parts pusht --out benchmarks/results/pusht_expert.json

Timings are measured in one run and reported as ratios too, because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from common import write_result  # noqa: E402

from flexwm.collect import CollectConfig, collect  # noqa: E402
from flexwm.envs import AVDC_TASKS, make_env  # noqa: E402
from flexwm.evaluation.stats import success_summary  # noqa: E402


def _steps_per_s(step, steps: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(rng.uniform(-1, 1, 4).astype(np.float32))
    return steps / (time.perf_counter() - t0)


def raw_steps_per_s(task: str, steps: int) -> float:
    """Meta-World physics alone (no rendering)."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the envs)

    env = gym.make("Meta-World/MT1", env_name=task, seed=0)
    env.reset(seed=0)
    try:
        return _steps_per_s(env.step, steps)
    finally:
        env.close()


def adapter_steps_per_s(task: str, steps: int, fast_render: bool) -> float:
    """flexwm's adapter: physics + a 64x64 camera image every step."""
    env = make_env("metaworld", task, image_size=(64, 64), fast_render=fast_render, max_episode_steps=10**6)
    env.reset(seed=0)
    try:
        return _steps_per_s(env.step, steps)
    finally:
        env.close()


def collection_frames_per_s(workers: int, episodes: int, tmp: Path) -> dict:
    cfg = CollectConfig(env="metaworld", tasks=["door-open-v3", "button-press-v3"], sources=["expert"],
                        episodes=episodes, max_steps=100, workers=workers)
    out = tmp / f"w{workers}"
    t0 = time.perf_counter()
    summary = collect(cfg, out, progress=False)
    dt = time.perf_counter() - t0
    from flexwm.data import FlexDataset

    frames = FlexDataset(out).num_frames
    shutil.rmtree(out)
    return {"workers": workers, "episodes": summary["written"], "frames": int(frames), "seconds": dt,
            "frames_per_s": frames / dt}


def expert_success(episodes: int, workers: int, out: Path | None, tmp: Path) -> dict:
    from flexwm.data import FlexDataset

    cfg = CollectConfig(env="metaworld", tasks=list(AVDC_TASKS), sources=["expert"], episodes=episodes,
                        workers=workers, image_size=64)
    target = out or tmp / "avdc"
    collect(cfg, target, resume=True, progress=True)
    per_task: dict[str, list[bool]] = {t: [] for t in AVDC_TASKS}
    for m in FlexDataset(target).episodes:
        if m["source"] == "expert" and m["env_task"] in per_task and m["seed"] < cfg.seed + episodes:
            per_task[m["env_task"]].append(m["outcome"] == "success")
    tasks = {t: success_summary(f) for t, f in per_task.items()}
    all_flags = [f for flags in per_task.values() for f in flags]
    return {"episodes_per_task": episodes, "max_episode_steps": cfg.max_steps or "adapter default",
            "per_task": tasks, "average_over_tasks": float(np.mean([v["rate"] for v in tasks.values()])),
            "pooled": success_summary(all_flags), "dataset": str(target)}


def pusht_expert_success(episodes: int, workers: int, tmp: Path) -> dict:
    """flexwm's PushT expert (sampling-based pushes on a copy of the true state) on the real simulator."""
    from flexwm.data import FlexDataset

    cfg = CollectConfig(env="pusht", tasks=["pusht"], sources=["expert"], episodes=episodes, workers=workers,
                        image_size=96, seed=1000)
    t0 = time.perf_counter()
    collect(cfg, tmp / "pusht", progress=True)
    dt = time.perf_counter() - t0
    ds = FlexDataset(tmp / "pusht")
    flags = [m["outcome"] == "success" for m in ds.episodes]
    first = [int(np.flatnonzero(ds.load_columns(i)["next.success"])[0]) for i, f in enumerate(flags) if f]
    return {"seeds": [cfg.seed, cfg.seed + episodes - 1], "max_episode_steps": 300, **success_summary(flags),
            "median_steps_to_success": float(np.median(first)) if first else None, "seconds": dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/collect.json")
    p.add_argument("--steps", type=int, default=500, help="steps per speed measurement")
    p.add_argument("--episodes", type=int, default=50, help="expert episodes per AVDC task")
    p.add_argument("--collect-episodes", type=int, default=4, help="episodes per task for the worker timing")
    p.add_argument("--keep-dataset", default=None, help="keep the AVDC expert dataset here (reused on rerun)")
    p.add_argument("--parts", default="speed,workers,avdc", help="comma-separated: speed, workers, avdc, pusht")
    p.add_argument("--pusht-episodes", type=int, default=50)
    args = p.parse_args()
    parts = set(args.parts.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="flexwm-bench-"))
    try:
        result: dict = {"seed": 0}
        if "speed" in parts:
            task = "door-open-v3"
            raw = raw_steps_per_s(task, args.steps)
            fast = adapter_steps_per_s(task, args.steps, fast_render=True)
            slow = adapter_steps_per_s(task, max(50, args.steps // 5), fast_render=False)
            result["env_speed"] = {"task": task, "image_size": 64, "raw_physics_steps_per_s": raw,
                                   "steps_per_s_tuned_render": fast, "steps_per_s_default_render": slow,
                                   "tuned_over_default": fast / slow, "raw_over_tuned": raw / fast}
        if "workers" in parts:
            workers = [collection_frames_per_s(w, args.collect_episodes, tmp) for w in (1, 2)]
            result["collection"] = workers
            result["two_over_one_worker"] = workers[1]["frames_per_s"] / workers[0]["frames_per_s"]
        if "avdc" in parts:
            keep = Path(args.keep_dataset) if args.keep_dataset else None
            result["expert_success_avdc"] = expert_success(args.episodes, 2, keep, tmp)
        if "pusht" in parts:
            result["pusht_expert"] = pusht_expert_success(args.pusht_episodes, 2, tmp)
        path = write_result(args.out, result)
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
