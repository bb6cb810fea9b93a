"""Run a policy on the real simulator and report success, decision latency and (imagined vs real) frames.

The policy hears an instruction from the `eval` paraphrase split by default (held out from training), so a
success means the model understood the instruction rather than memorised a string; episode e uses
instruction e mod len(split). Nothing is written to disk: videos come back as arrays for the report.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from flexwm.errors import ConfigError
from flexwm.evaluation.stats import mean_interval, success_summary
from flexwm.models.interface import WorldModel
from flexwm.planning.base import RecedingHorizonPolicy, check_action_dim


def eval_instructions(task: str, split: str) -> list[str]:
    from flexwm.envs.instructions import canonical_instruction, paraphrases

    if split == "canonical":
        return [canonical_instruction(task)]
    out = paraphrases(task, split)  # type: ignore[arg-type]
    if not out:
        raise ConfigError(f"task {task!r} has no {split!r} instructions; use instruction_split='canonical'")
    return out


def instruction_seen_in_training(wm: WorldModel | None, instruction: str) -> bool | None:
    """Whether the model was trained on `instruction` (`wm.knows_instruction`); None without a world model or
    when the model cannot tell."""
    return None if wm is None else wm.knows_instruction(instruction)


def _imagined_track(plans: list[dict], n_frames: int, frame_shape: tuple[int, ...], stride: int) -> np.ndarray:
    """Imagined frames aligned with the real ones: at time t, the newest plan's frame for t (else black).
    Imagined frame k of a plan made at step s shows time s + (k + 1) * stride."""
    track = np.zeros((n_frames, *frame_shape), np.uint8)
    for p in plans:
        if p["imagined"] is None:
            continue
        for k, img in enumerate(p["imagined"]):
            t = p["step"] + (k + 1) * stride
            if t < n_frames and img.shape == frame_shape:
                track[t] = img
    return track


def evaluate_policy(policy: RecedingHorizonPolicy, env_name: str, task: str, episodes: int, seed: int = 0,
                    max_steps: int | None = None, instruction_split: str = "eval", record_video: int = 0, *,
                    image_size: tuple[int, int] = (64, 64), camera: str | None = None,
                    stop_on_success: bool = True) -> dict[str, Any]:
    """Roll `policy` out for `episodes` episodes (reset seeds seed, seed + 1, ...) on `env_name`/`task`.

    Returns per-episode records (seed, instruction, success, steps, whether the instruction was in the
    model's training text), the success summary with a Wilson 95% interval, decision latency (seconds per
    `act` that made a new plan: mean and 95th percentile) and, for the first `record_video` episodes, the
    real frames (T+1, H, W, 3), the imagined frames aligned with them, and every plan (step, actions,
    decoded imagined frames, score).
    """
    from flexwm.envs import make_env

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if instruction_split not in ("train", "eval", "all", "canonical"):
        raise ConfigError(f"instruction_split {instruction_split!r}: choose 'eval', 'train', 'all' or 'canonical'")
    instructions = eval_instructions(task, instruction_split)
    env = make_env(env_name, task, image_size=image_size, camera=camera, max_episode_steps=max_steps)
    try:
        check_action_dim(policy.action_dim, env.action_space.shape[0], "the policy", f"{env_name}/{task}")
        seen = {s: instruction_seen_in_training(policy.wm, s) for s in instructions}
        records, latencies, videos = [], [], []
        for e in range(episodes):
            rec, lat, video = _episode(policy, env, seed + e, instructions[e % len(instructions)],
                                       record=e < record_video, stop_on_success=stop_on_success)
            rec["instruction_seen_in_training"] = seen[rec["instruction"]]
            records.append(rec)
            latencies += lat
            if video is not None:
                videos.append({"episode": e, **video})
    finally:
        env.close()
    flags = [r["success"] for r in records]
    lat = np.asarray(latencies, float)
    cov = [r["max_coverage"] for r in records if "max_coverage" in r]
    extra = {"mean_max_coverage": float(np.mean(cov)), "max_coverage_ci95": mean_interval(cov)} if cov else {}
    return {
        "policy": policy.name, "env": env_name, "task": task, "episodes": episodes, "seed": seed,
        "max_steps": env.max_episode_steps, "instruction_split": instruction_split, "execute": policy.execute,
        "policy_config": policy.config,
        "per_episode": records, "success": flags, "summary": success_summary(flags), **extra,
        "latency": {"decisions": int(lat.size), "mean_s": float(lat.mean()) if lat.size else None,
                    "p95_s": float(np.percentile(lat, 95)) if lat.size else None},
        "videos": videos,
    }


def _episode(policy: RecedingHorizonPolicy, env: Any, seed: int, instruction: str, *, record: bool,
             stop_on_success: bool) -> tuple[dict, list[float], dict | None]:
    obs = dataclasses.replace(env.reset(seed), instruction=instruction)
    policy.reset(seed)
    frames, plans, latencies = [obs.image], [], []
    success, steps, coverage = False, 0, None
    for t in range(env.max_episode_steps):
        start = time.perf_counter()
        action = policy.act(obs)
        elapsed = time.perf_counter() - start
        if policy.replanned:
            latencies.append(elapsed)
            if record and policy.last_plan is not None:
                p = policy.last_plan
                plans.append({"step": t, "actions": p.actions, "score": p.score,
                              "imagined": None if p.latents is None else policy.decode(p.latents)})
        result = env.step(action)
        steps += 1
        success = success or result.success
        if "coverage" in (result.info or {}):  # PushT: fraction of the target covered, its standard graded score
            coverage = max(coverage or 0.0, float(result.info["coverage"]))
        obs = dataclasses.replace(result.observation, instruction=instruction)
        if record:
            frames.append(obs.image)
        if result.done or (success and stop_on_success):
            break
    rec = {"seed": seed, "instruction": instruction, "success": bool(success), "steps": steps}
    if coverage is not None:
        rec["max_coverage"] = coverage
    if not record:
        return rec, latencies, None
    real = np.stack(frames)
    stride = policy.planner.frame_stride
    return rec, latencies, {"real": real, "imagined": _imagined_track(plans, len(real), real.shape[1:], stride),
                            "plans": plans, "frame_stride": stride}
