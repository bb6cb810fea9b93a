"""Imagination speed: imagined environment steps/s (single and batched WorldModelVecEnv) against the real
Meta-World simulator with 64x64 rendering, measured in one run.

    python benchmarks/imagine.py --out benchmarks/results/imagine_speed.json [--run runs/NAME] [--preset cpu]

Without --run, an untrained model of the given preset is timed (same compute as a trained one). Rates are
reported per native action: an imagined env step covers frames_per_step x frame_stride native actions. With
frames_per_step=1 every model call generates a whole chunk of frames and keeps the first (fresh observation
every frame_stride actions); with a whole chunk per step nothing is thrown away (coarser observation rate).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
from common import write_result  # noqa: E402


def untrained(preset_name: str, steps: int):
    from flexwm.models.interface import FlexWorldModelWrapper
    from flexwm.models.text import make_text_encoder
    from flexwm.models.tokenizer import make_tokenizer
    from flexwm.models.world_model import FlexWorldModel, preset

    torch.manual_seed(0)
    model = FlexWorldModel(preset(preset_name, embodiments={"sawyer": {"action_dim": 4, "proprio_dim": 4}})).eval()
    tok = make_tokenizer(preset_name, seed=0).eval()
    return FlexWorldModelWrapper(model, tok, make_text_encoder("hash"), embodiment="sawyer", steps=steps)


def imagined_rate(env, n: int, steps: int) -> float:
    env.reset(seed=0)
    a = np.zeros((n, 4), np.float32) if n > 1 else np.zeros(4, np.float32)
    for _ in range(2):
        env.step(a)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(a)
    return n * steps / (time.perf_counter() - t0)


def real_rate(steps: int) -> float:
    from flexwm.envs import make_env

    env = make_env("metaworld", "door-open-v3", image_size=(64, 64), max_episode_steps=10**6)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--flow-steps", type=int, default=4, help="sampler steps per imagined chunk")
    p.add_argument("--batch", default="1,8,32,128")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--frames-per-step", default="1,chunk",
                   help="imagined frames per env step to time: numbers, or 'chunk' (one whole model chunk, "
                        "horizon // frame_stride frames: nothing generated is thrown away)")
    p.add_argument("--out", default="benchmarks/results/imagine_speed.json")
    args = p.parse_args()

    from flexwm.rl import WorldModelEnv, WorldModelEnvConfig, WorldModelVecEnv

    if args.run:
        from flexwm.inference import load_run

        wm, what = load_run(args.run, steps=args.flow_steps), f"run {args.run}"
    else:
        wm, what = untrained(args.preset, args.flow_steps), f"untrained {args.preset} preset"
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    chunk = int(wm.horizon) // int(wm.frame_stride)
    rows = {}
    for fps in args.frames_per_step.split(","):
        k = chunk if fps == "chunk" else int(fps)
        cfg = WorldModelEnvConfig(horizon=10**6, terminate_on_success=False, frames_per_step=k)
        per_step = wm.frame_stride * cfg.frames_per_step
        for n in [int(b) for b in args.batch.split(",")]:
            env = WorldModelEnv(wm, frames, cfg) if n == 1 else WorldModelVecEnv(wm, frames, n, cfg)
            r = imagined_rate(env, n, max(3, args.steps if n > 1 else 5 * args.steps))
            rows[f"frames_per_step={k},batch={n}"] = {"frames_per_step": k, "batch": n, "env_steps_per_s": r,
                                                      "native_actions_per_s": r * per_step}
    real = real_rate(300)
    best_key = max(rows, key=lambda key: rows[key]["native_actions_per_s"])
    write_result(args.out, {"model": what, "flow_steps": args.flow_steps, "frames_per_model_chunk": chunk,
                            "frame_stride": int(wm.frame_stride), "imagined": rows, "real_sim_steps_per_s_64px": real,
                            "best": best_key, "best_imagined_over_real": rows[best_key]["native_actions_per_s"] / real,
                            "threads": torch.get_num_threads()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
