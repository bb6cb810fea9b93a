"""Run a policy on the real simulator and report success, decision latency and (imagined vs real) frames.

The policy hears an instruction from the `eval` paraphrase split by default (held out from training), so a
success means the model understood the instruction rather than memorised a string; episode e uses
instruction e mod len(split). `evaluate_policy` writes nothing to disk (videos come back as arrays);
`evaluate_run` (behind `flexwm eval`) evaluates a model's policy task by task into a resumable result file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexwm.config import field
from flexwm.envs import AVDC_TASKS, GymEnvConfig
from flexwm.errors import ConfigError
from flexwm.evaluation.stats import mean_interval, success_summary
from flexwm.models.interface import WorldModel
from flexwm.planning.base import RecedingHorizonPolicy, check_action_dim


def eval_instructions(env: Any, split: str) -> list[str]:
    """The instructions of the task of `env` (a RobotEnv) in paraphrase split `split`, or its canonical one."""
    out = env.instructions(split)
    if not out:
        raise ConfigError(f"task {env.task!r} has no {split!r} instructions; use instruction_split='canonical'")
    return out


SPLITS = ("eval", "train", "all", "canonical")


def load_instruction_file(path: str | Path, env: str, tasks: Sequence[str]) -> dict[str, list[str]]:
    """A user's instructions: a JSON file mapping task names to lists of instructions, e.g.
    {"door-open-v3": ["open the door", "pull the door open"]}. Every evaluated task needs a non-empty list;
    a task name the simulator does not have is an error (a typo would otherwise go unnoticed)."""
    from flexwm.envs import list_tasks

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--instructions {path}: not a split ({' | '.join(SPLITS)}) and no such file; give a JSON "
                          'file mapping task names to lists of instructions, e.g. {"door-open-v3": ["open the door"]}')
    try:
        table = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"--instructions {path} is not valid JSON ({e})") from None
    if not isinstance(table, dict) or not all(
            isinstance(v, list) and v and all(isinstance(s, str) and s.strip() for s in v) for v in table.values()):
        raise ConfigError(f"--instructions {path} must map each task name to a non-empty list of instruction "
                          'strings, e.g. {"door-open-v3": ["open the door"]}')
    known = set(list_tasks(env))
    unknown = sorted(set(table) - known)
    if unknown:
        hint = {t: difflib.get_close_matches(t, sorted(known), n=1) for t in unknown}
        hints = "; ".join(f"{t!r}" + (f" (did you mean {m[0]!r}?)" if m else "") for t, m in hint.items())
        raise ConfigError(f"--instructions {path} names tasks {env} does not have: {hints}")
    missing = [t for t in tasks if t not in table]
    if missing:
        raise ConfigError(f"--instructions {path} has no instructions for the evaluated tasks {missing}; add them "
                          "or evaluate only the tasks it covers (--task)")
    return {t: [str(s) for s in table[t]] for t in tasks}


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
                    stop_on_success: bool = True, instructions: Sequence[str] | None = None,
                    env_options: Any = None,
                    on_episode: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Roll `policy` out for `episodes` episodes (reset seeds seed, seed + 1, ...) on `env_name`/`task`.

    Returns per-episode records (seed, instruction, success, steps, whether the instruction was in the
    model's training text), the success summary with a Wilson 95% interval, decision latency (seconds per
    `act` that made a new plan: mean and 95th percentile) and, for the first `record_video` episodes, the
    real frames (T+1, H, W, 3), the imagined frames aligned with them, and every plan (step, actions,
    decoded imagined frames, score). `instructions` (a list) replaces the split: episode e hears
    instructions[e % len(instructions)]; "per_instruction" holds the success summary of each. A gym:ENV_ID env
    has no held-out paraphrases: every split is its configured instructions. `env_options`: how to read a gym
    env (flexwm.envs.GymEnvConfig or a dict of it). `on_episode(record)` is called after every episode (e.g. to
    advance a progress bar).
    """
    from flexwm.envs import make_env

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if instructions is not None:
        instructions = [str(s) for s in instructions]
        if not instructions:
            raise ConfigError("instructions must hold at least one instruction")
        instruction_split = "given"
    elif instruction_split not in SPLITS:
        raise ConfigError(f"instruction_split {instruction_split!r}: choose 'eval', 'train', 'all' or 'canonical'")
    env = make_env(env_name, task, image_size=image_size, camera=camera, max_episode_steps=max_steps,
                   env_options=env_options)
    try:
        if instructions is None:
            instructions = eval_instructions(env, instruction_split)
        check_action_dim(policy.action_dim, env.action_space.shape[0], "the policy", f"{env_name}/{task}")
        seen = {s: instruction_seen_in_training(policy.wm, s) for s in instructions}
        records, latencies, videos = [], [], []
        for e in range(episodes):
            rec, lat, video = _episode(policy, env, seed + e, instructions[e % len(instructions)],
                                       record=e < record_video, stop_on_success=stop_on_success)
            rec["instruction_seen_in_training"] = seen[rec["instruction"]]
            records.append(rec)
            latencies += lat
            if on_episode is not None:
                on_episode(rec)
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
        "per_instruction": {s: success_summary([r["success"] for r in records if r["instruction"] == s])
                            for s in dict.fromkeys(r["instruction"] for r in records)},
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


# ---- a whole evaluation: `flexwm eval` ------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """What `flexwm eval` evaluates: a policy built on a model, on tasks of a simulator."""

    ckpt: str = field("", help="run, checkpoint or exported model folder (for policy bc: a train-bc folder)")
    env: str = field("metaworld", help="simulator: metaworld | pusht | gym:ENV_ID (any gymnasium environment)")
    tasks: list[str] = field(default_factory=lambda: list(AVDC_TASKS), help="task names")
    policy: str = field("wam", help="a name from flexwm.planning.POLICIES")
    episodes: int = field(10, ge=1, help="episodes per task (reset seeds seed, seed + 1, ...)")
    seed: int = field(10_000, ge=0, help="first reset seed (training data used seeds from 0)")
    max_steps: int | None = field(None, help="episode length limit")
    instructions: str = field("eval", help="instruction split (eval | train | all | canonical) or a JSON file "
                                           "mapping task names to lists of instructions")
    budget: str = field("auto", choices=("auto", "default", "cpu", "tiny"), help="planning budget; auto: cpu on a CPU")
    flow_steps: int | None = field(None, help="flow sampler steps (default 4 with budget cpu, else 10)")
    ac_noise: str = field("sample", choices=("sample", "zero"))
    ac_guidance: float = field(1.0, ge=0.0)
    cfg_scale: float = field(1.0, ge=0.0, help="classifier-free guidance on the instruction (1 = none)")
    device: str = field("cpu", help="the world model's device")
    policy_overrides: dict = field(default_factory=dict, help="the policy's config overrides")
    videos: int = field(0, ge=0, help="episodes per task saved as real | imagined-plan videos")
    env_options: GymEnvConfig = field(default_factory=GymEnvConfig, help="how to read a gym:ENV_ID env")


def eval_output(out: str | Path | None, ckpt: str | Path, policy: str) -> Path:
    """The result file of an evaluation: OUT itself if it ends in .json, else OUT/eval-POLICY.json; OUT
    defaults to runs/eval/NAME/ (flexwm.runs.results_dir), never the model's own folder."""
    from flexwm.runs import results_dir

    out = Path(out) if out is not None else results_dir(ckpt)
    return out if out.suffix == ".json" else out / f"eval-{policy}.json"




def evaluate_run(cfg: EvalConfig, out: str | Path | None = None, *, resume: bool = False,
                 command: list[str] | None = None, log: Callable[[str], None] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Evaluate `cfg.policy` built on the model at `cfg.ckpt` in the real simulator, task by task: success with
    95% CIs and latency per task, pooled and averaged. The result file (`eval_output`) is rewritten atomically
    after every task, so an interrupted evaluation continues with `resume=True`; each task's policy and reset
    seeds depend only on the task, so resumed == uninterrupted. Videos go to the result file's folder/report/.
    `log` receives one line per finished task; `progress`: a bar on stderr over the episodes of all tasks left.
    Returns the result (with "out": the result file)."""
    from flexwm.config import check_device, to_dict, validate
    from flexwm.envs import check_env_name, embodiment_of, is_gym
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json, plain_json
    from flexwm.metrics import above_bars, progress_bar
    from flexwm.planning import BUDGETS, POLICIES, make_policy, policy_config

    if cfg.budget != "auto" and cfg.budget not in BUDGETS:
        raise ConfigError(f"--budget {cfg.budget!r} is not a planning budget; choose auto or one of {list(BUDGETS)}")
    validate(cfg)
    check_env_name(cfg.env)
    if cfg.policy not in POLICIES:
        raise ConfigError(f"unknown policy {cfg.policy!r}; choose one of {list(POLICIES)}")
    if not cfg.tasks:
        raise ConfigError("no tasks to evaluate; give --task NAME[,NAME...] or avdc")
    budget = ("cpu" if cfg.device == "cpu" else "default") if cfg.budget == "auto" else cfg.budget
    check_device(cfg.device)
    try:  # a bad override fails here, before the model loads
        policy_config(cfg.policy, cfg.policy_overrides or None, budget)
    except ConfigError as e:
        raise ConfigError(f"--set for policy {cfg.policy!r}: {e}") from None
    flow_steps = cfg.flow_steps if cfg.flow_steps is not None else (4 if budget == "cpu" else 10)
    given = None if cfg.instructions in SPLITS else load_instruction_file(cfg.instructions, cfg.env, cfg.tasks)
    out = eval_output(out, cfg.ckpt, cfg.policy)
    setup = {"ckpt": str(cfg.ckpt), "policy": cfg.policy, "env": cfg.env, "episodes_per_task": cfg.episodes,
             "seed": cfg.seed, "max_steps": cfg.max_steps, "instructions": cfg.instructions, "flow_steps": flow_steps,
             "policy_overrides": cfg.policy_overrides, "ac_noise": cfg.ac_noise, "budget": budget,
             "ac_guidance": cfg.ac_guidance, "cfg_scale": cfg.cfg_scale,
             **({"env_options": to_dict(cfg.env_options)} if is_gym(cfg.env) else {}),
             **({"instruction_lists": given} if given else {})}
    per_task: dict[str, Any] = {}
    if out.exists() and not resume:
        raise ConfigError(f"{out} exists; pass --resume to finish that evaluation, or choose another --out")
    if out.exists():
        try:
            old = json.loads(out.read_text())
        except ValueError as e:
            raise ConfigError(f"{out} is not a readable result file ({e}); remove it or choose another --out") from e
        differs = sorted(k for k, v in setup.items() if plain_json(old.get(k)) != plain_json(v))
        if differs:
            raise ConfigError(f"{out} was made with other settings ({differs} differ); use the same options to "
                              "resume, or choose another --out")
        per_task = {t: r for t, r in old.get("per_task", {}).items() if t in cfg.tasks}
        if per_task and log:
            log(f"resuming: {len(per_task)} of {len(cfg.tasks)} tasks already done in {out}")
    bc_model = wm = None
    if cfg.policy == "bc":
        from flexwm.planning import BCModel

        bc_model = BCModel.from_pretrained(cfg.ckpt)
    else:
        wm = load_run(cfg.ckpt, steps=flow_steps, ac_noise=cfg.ac_noise, ac_guidance=cfg.ac_guidance,
                      cfg_scale=cfg.cfg_scale, device=cfg.device, prefer_embodiment=embodiment_of(cfg.env))

    # the simulator renders at the model's frame size
    image_size = tuple(wm.image_size or (64, 64)) if wm is not None else tuple(bc_model.cfg.image_size)

    def write(done: bool) -> dict:
        rates = [r["summary"]["rate"] for r in per_task.values()]
        flags = [f for r in per_task.values() for f in r["success"]]
        result = {**setup, "complete": done, "tasks": list(cfg.tasks),
                  "average_over_tasks": float(np.mean(rates)) if rates else None,
                  "pooled": success_summary(flags), "per_task": per_task, "command": " ".join(command or [])}
        atomic_write_json(out, plain_json(result))
        return result

    todo = [t for t in cfg.tasks if t not in per_task]
    bar = progress_bar(len(todo) * cfg.episodes, f"eval {cfg.policy}", enabled=progress and bool(todo), unit="ep")
    for task in todo:
        bar.set_description(f"eval {cfg.policy} {task}")
        pol = make_policy(cfg.policy, wm, cfg.policy_overrides or None, bc_model=bc_model, budget=budget)
        r = evaluate_policy(pol, cfg.env, task, cfg.episodes, seed=cfg.seed, max_steps=cfg.max_steps,
                            instruction_split=cfg.instructions, record_video=cfg.videos, image_size=image_size,
                            instructions=None if given is None else given[task], env_options=cfg.env_options,
                            on_episode=lambda _: bar.update(1))
        recorded = r.pop("videos", None)
        if recorded:
            from flexwm.evaluation.videos import save_eval_videos

            save_eval_videos(out.parent, cfg.policy, task, recorded)
        per_task[task] = plain_json(r)
        s = r["summary"]
        if log:
            with above_bars():
                log(f"{task:28s} {s['successes']:3d}/{s['episodes']:<3d} {s['rate']:.0%}  CI95 "
                    f"[{s['ci95'][0]:.0%}, {s['ci95'][1]:.0%}]  {r['latency']['mean_s'] or 0:.3f} s/plan"
                    + (f"  mean max coverage {r['mean_max_coverage']:.1%}" if "mean_max_coverage" in r else ""))
        write(False)
    bar.close()
    return {**write(True), "out": str(out)}
