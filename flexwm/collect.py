"""Data collection: run scripted experts, noisy experts and autonomous play in the real simulator, in parallel
worker processes, and write every episode (successes, failures and play alike) to a LeRobot v3 dataset.

The job list is a pure function of the config, so `--resume` after a crash (or `kill -9`) simply skips the jobs
whose episodes are already in the dataset. Workers simulate; the parent process is the only writer, so episode
and frame indices stay contiguous.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexwm.config import field, from_dict, validate
from flexwm.envs import SOURCES, GymEnvConfig, check_env_name, is_gym
from flexwm.errors import ConfigError, DatasetError


@dataclass
class CollectConfig:
    env: str = field("metaworld", help="simulator: metaworld | pusht | gym:ENV_ID (any gymnasium environment)")
    tasks: list[str] = field(default_factory=lambda: ["reach-v3"], help="task names (see `flexwm tasks`)")
    sources: list[str] = field(default_factory=lambda: ["expert"], help="expert | noisy | play | random")
    episodes: int = field(10, ge=1, help="episodes per (task, source, noise level)")
    noise: list[float] = field(default_factory=lambda: [0.3], help="noise levels of the noisy expert")
    image_size: int = field(64, ge=16, le=512)
    camera: str | None = field(None, help="camera name (Meta-World); None = the adapter's default")
    max_steps: int | None = field(None, help="episode length limit; None = the adapter's default")
    seed: int = field(0, ge=0, help="first reset seed; episode i of a job uses seed + i")
    workers: int = field(1, ge=1, le=64)
    fast_render: bool = True
    env_options: GymEnvConfig = field(default_factory=GymEnvConfig, help="how to read a gym:ENV_ID env")
    data_files_size_in_mb: float | None = field(
        None, help="a packed data file rolls over at this size; None = the dataset's own, else LeRobot's 100")
    video_files_size_in_mb: float | None = field(
        None, help="a packed video file rolls over at this size; None = the dataset's own, else LeRobot's 500")

    def __post_init__(self) -> None:
        check_env_name(self.env)
        bad = [s for s in self.sources if s not in SOURCES]
        if bad:
            raise ConfigError(f"unknown source(s) {bad}; choose from {list(SOURCES)}")
        if any(not (0.0 <= n <= 2.0) for n in self.noise):
            raise ConfigError(f"noise levels must be in [0, 2] (std as a fraction of the action half-range), "
                              f"got {self.noise}")


@dataclass(frozen=True)
class Job:
    task: str
    source: str
    noise: float
    seed: int

    @property
    def job_id(self) -> str:
        return f"{self.task}|{self.source}|{self.noise:g}|{self.seed}"


def plan_jobs(cfg: CollectConfig) -> list[Job]:
    """Every episode to collect, in a fixed order (task-major, then source, noise level, seed)."""
    jobs = []
    for task in cfg.tasks:
        for source in cfg.sources:
            levels = cfg.noise if source == "noisy" else [0.0]
            for noise in levels:
                for i in range(cfg.episodes):
                    jobs.append(Job(task=task, source=source, noise=float(noise), seed=cfg.seed + i))
    return jobs


def validate_tasks(cfg: CollectConfig) -> None:
    from flexwm.envs import list_tasks

    valid = list_tasks(cfg.env)
    unknown = [t for t in cfg.tasks if t not in valid]
    if unknown:
        import difflib

        hints = {t: difflib.get_close_matches(t, valid, n=1) for t in unknown}
        hint = "; ".join(f"{t!r} -> did you mean {h[0]!r}?" for t, h in hints.items() if h)
        raise ConfigError(
            f"unknown {cfg.env} task(s) {unknown}. {hint + '. ' if hint else ''}Valid tasks: {', '.join(valid)}"
        )


# ---- worker side -------------------------------------------------------------------------------------------

_WORKER_ENVS: dict = {}
_WORKER_CFG: CollectConfig | None = None


def _worker_init(cfg_dict: dict) -> None:
    global _WORKER_CFG
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    try:  # one simulator per worker process: keep libraries from spawning extra threads
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER_CFG = from_dict(CollectConfig, cfg_dict)


def _env_for(task: str):
    from flexwm.envs import make_env

    cfg = _WORKER_CFG
    assert cfg is not None
    if task not in _WORKER_ENVS:
        _WORKER_ENVS[task] = make_env(
            cfg.env, task, image_size=(cfg.image_size, cfg.image_size), camera=cfg.camera,
            max_episode_steps=cfg.max_steps, fast_render=cfg.fast_render, env_options=cfg.env_options,
        )
    return _WORKER_ENVS[task]


def run_job(job: Job):
    """Simulate one episode (in a worker process). Returns the Episode record."""
    from flexwm.envs import make_scripted_policy, run_episode

    env = _env_for(job.task)
    policy = make_scripted_policy(job.source, env, noise=job.noise, seed=job.seed)
    episode = run_episode(env, policy, seed=job.seed, source=job.source, noise=job.noise)
    episode.meta.extra["job_id"] = job.job_id
    return episode


def _iter_episodes(cfg: CollectConfig, jobs: list[Job]) -> Iterator:
    cfg_dict = dataclasses.asdict(cfg)
    if cfg.workers == 1:
        _worker_init(cfg_dict)
        for job in jobs:
            yield run_job(job)
        for env in _WORKER_ENVS.values():
            env.close()
        _WORKER_ENVS.clear()
        return
    # spawn (not fork): OpenGL/EGL contexts and torch thread pools do not survive fork safely
    ctx = mp.get_context("spawn")
    with ctx.Pool(cfg.workers, initializer=_worker_init, initargs=(cfg_dict,)) as pool:
        # in-order results keep the dataset order deterministic for a given config
        yield from pool.imap(run_job, jobs, chunksize=1)


# ---- parent side -------------------------------------------------------------------------------------------


def _probe_schema(cfg: CollectConfig) -> dict:
    from flexwm.envs import make_env

    env = make_env(cfg.env, cfg.tasks[0], image_size=(cfg.image_size, cfg.image_size), camera=cfg.camera,
                   max_episode_steps=cfg.max_steps, fast_render=cfg.fast_render, env_options=cfg.env_options)
    try:
        env.reset(seed=cfg.seed)
        schema = dict(
            fps=env.fps, image_size=tuple(env.image_size), action_dim=int(env.action_space.shape[0]),
            proprio_dim=int(env.proprio_dim), state_dim=int(env.privileged_state().shape[0]),
            embodiment=env.embodiment, action_low=env.action_space.low.tolist(),
            action_high=env.action_space.high.tolist(),
        )
    finally:
        env.close()
    return schema


def collect(cfg: CollectConfig, out: str | Path, *, resume: bool = False,
            progress: bool = True, on_episode: Callable | None = None) -> dict:
    """Collect `cfg` into the dataset at `out`. Returns a summary dict (episodes written, skipped, outcomes).

    Without `resume`, `out` must not hold a dataset already. With `resume`, the jobs already present are
    skipped and the rest appended (the dataset schema must match).
    """
    from flexwm.data import DatasetWriter, FlexDataset

    validate(cfg)
    validate_tasks(cfg)
    scripted = [s for s in cfg.sources if s in ("expert", "noisy")]
    if is_gym(cfg.env) and scripted:
        raise ConfigError(f"{cfg.env} has no scripted expert for the source(s) {scripted}; collect with the "
                          "task-free sources play and random (--source play,random)")
    out = Path(out)
    jobs = plan_jobs(cfg)
    done: set[str] = set()
    exists = out.exists() and any(out.iterdir())
    if exists and not resume:
        raise DatasetError(
            f"{out} already exists and is not empty; pass --resume to continue or extend that dataset, "
            "or choose a new --out directory"
        )
    if exists and (out / "meta").exists():
        ds = FlexDataset(out)
        done = {str(ep.get("extra", {}).get("job_id")) for ep in ds.episodes}
    todo = [j for j in jobs if j.job_id not in done]

    schema = _probe_schema(cfg)
    counts = {"success": 0, "failure": 0, "play": 0}
    written = 0
    bar = None
    if progress and todo:
        from flexwm.metrics import progress_bar

        bar = progress_bar(len(todo), f"collect {cfg.env}", unit="ep")
    with DatasetWriter(out, **schema, data_files_size_in_mb=cfg.data_files_size_in_mb,
                       video_files_size_in_mb=cfg.video_files_size_in_mb) as writer:
        for episode in _iter_episodes(cfg, todo):
            writer.add(episode)
            written += 1
            counts[episode.meta.outcome] += 1
            if on_episode is not None:
                on_episode(episode)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k[:4]: v for k, v in counts.items()})
    if bar is not None:
        bar.close()
    return {"planned": len(jobs), "skipped": len(jobs) - len(todo), "written": written, "outcomes": counts,
            "out": str(out)}


def collect_dataset(out: str | Path, *, resume: bool = False, progress: bool = True, **config: Any) -> dict:
    """`flexwm.collect(out, env="metaworld", tasks=["reach-v3"], sources=["expert"], episodes=10, ...)`: the
    Python API's collection, with CollectConfig fields as keyword arguments (`tasks` may be "a,b" or "avdc"; for
    env="gym:ENV_ID" it defaults to the env's one task, and env_options is a dict of GymEnvConfig fields)."""
    from flexwm.envs import expand_tasks, is_gym, list_tasks

    if "tasks" in config:
        config["tasks"] = expand_tasks(config["tasks"])
    elif is_gym(config.get("env")):
        config["tasks"] = list_tasks(config["env"])
    return collect(from_dict(CollectConfig, config), out, resume=resume, progress=progress)


class _CallableModule(types.ModuleType):
    """`flexwm.collect` is this module and, called, `collect_dataset` (the Python API's `flexwm.collect(...)`)."""

    def __call__(self, out: str | Path, **kwargs: Any) -> dict:
        return collect_dataset(out, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
