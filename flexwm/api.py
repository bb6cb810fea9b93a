"""The Python API: what `import flexwm` gives (each name imported on first use, so `import flexwm` stays fast).

    import flexwm

    model = flexwm.load("flexwm/assets/demo")              # a run, a checkpoint or an exported folder
    policy = flexwm.make_policy(model, "wam")                # or "best-of-n", "cem", ... with config overrides
    result = flexwm.evaluate(policy, env="metaworld", task="button-press-v3", episodes=10)
    print(result["summary"])                                 # successes, rate, Wilson 95% interval

    env = flexwm.WorldModelEnv(model, start=frames)          # the model as a gymnasium env (imagination)
    flexwm.collect("data/mw", tasks="button-press-v3", sources=["expert", "play"], episodes=5)
    flexwm.train(["data/mw"], "runs/mw", preset="tiny")
    flexwm.export("runs/mw", "models/mw")                    # one self-contained folder

Everything here calls the same library functions as the `flexwm` command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexwm.errors import ConfigError


def load(path: str | Path, *, device: str = "cpu", env: str | None = None, embodiment: str | None = None,
         steps: int | None = None, **kwargs: Any) -> Any:
    """A world model (the `WorldModel` interface: encode, rollout, propose, inverse, score, decode) from a
    training run, a checkpoint directory or an exported folder. `env` ("metaworld", "pusht", "gym:ENV_ID")
    picks the embodiment of a model that knows several; `steps` (flow sampler steps) defaults to 4 on a CPU and 10
    elsewhere, as `flexwm eval --budget auto`; other keyword arguments go to the wrapper's constructor."""
    import flexwm
    from flexwm.envs import embodiment_of

    steps = steps if steps is not None else (4 if device == "cpu" else 10)
    return flexwm.FlexWorldModelWrapper.from_pretrained(path, embodiment=embodiment, device=device, steps=steps,
                                                        prefer_embodiment=embodiment_of(env), **kwargs)


def make_policy(model: Any, name: str = "wam", *, budget: str = "auto", action_space: Any = None,
                **overrides: Any) -> Any:
    """A policy (`reset(seed)`, `act(observation) -> action`) acting with `model`: a world model from `load`
    (any name in flexwm.planning.POLICIES), a `BCModel` (name "bc") or None (name "random"). `overrides` are
    fields of that policy's config (e.g. population=32 for "cem"); `budget` ("auto": "cpu" when the model runs
    on a CPU, else "default"; or "tiny") sizes the planners, as `flexwm eval --budget`."""
    import torch

    from flexwm.planning import BCModel
    from flexwm.planning import make_policy as build

    if isinstance(model, BCModel):
        return build("bc", None, overrides or None, bc_model=model, action_space=action_space)
    if budget == "auto":
        device = getattr(model, "device", None)  # a world model without one runs where it runs: plan for a CPU
        budget = "cpu" if device is None or torch.device(device).type == "cpu" else "default"
    return build(name, model, overrides or None, action_space=action_space, budget=budget)


def evaluate(policy: Any, env: str = "metaworld", task: str | Sequence[str] | None = None, episodes: int = 10,
             seed: int = 10_000, *, max_steps: int | None = None,
             instructions: str | Sequence[str] | dict[str, Sequence[str]] = "eval",
             videos: int = 0, env_options: Any = None) -> dict[str, Any]:
    """Success of `policy` in the real simulator (reset seeds seed, seed + 1, ...; held-out instructions by
    default; `instructions` may also be a list, or a dict task -> list, that episodes cycle through). `env` may
    be "gym:ENV_ID" (`env_options`: a dict of flexwm.envs.GymEnvConfig fields, e.g. {"pixels": "image",
    "kwargs": {"g": 9.81}}); `task` defaults to button-press-v3 on Meta-World, else the simulator's one task. One task:
    the `evaluate_policy` result ("summary": successes, rate, 95% interval; "per_episode"; "per_instruction";
    "latency"). Several ("a,b", a list or "avdc"): {"per_task": {task: result}, "pooled": summary,
    "average_over_tasks": rate}."""
    import numpy as np

    from flexwm.envs import expand_tasks, list_tasks
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.evaluation.stats import success_summary

    size = policy.wm.image_size if getattr(policy, "wm", None) is not None else None
    if task is None:  # Meta-World's button press; the one task of the other simulators
        task = "button-press-v3" if env == "metaworld" else list_tasks(env)[0]
    tasks = expand_tasks(task)

    split = instructions if isinstance(instructions, str) else "eval"  # a list or dict replaces the split

    def given(t: str) -> Sequence[str] | None:
        if isinstance(instructions, str):
            return None
        if not isinstance(instructions, dict):
            return instructions
        if t not in instructions:
            raise ConfigError(f"instructions has no entry for task {t!r}; give one list per evaluated task")
        return instructions[t]

    def one(t: str) -> dict[str, Any]:
        return evaluate_policy(policy, env, t, episodes, seed=seed, max_steps=max_steps, instruction_split=split,
                               record_video=videos, image_size=size or (64, 64), instructions=given(t),
                               env_options=env_options)

    if isinstance(task, str) and len(tasks) == 1:
        return one(tasks[0])
    per_task = {t: one(t) for t in tasks}
    return {"per_task": per_task, "pooled": success_summary([f for r in per_task.values() for f in r["success"]]),
            "average_over_tasks": float(np.mean([r["summary"]["rate"] for r in per_task.values()]))}


def collect(out: str | Path, *, resume: bool = False, progress: bool = True, **config: Any) -> dict:
    """Collect episodes from the real simulator into the dataset `out`; keyword arguments are CollectConfig
    fields (env, tasks, sources, episodes, noise, image_size, max_steps, seed, workers)."""
    from flexwm.collect import collect_dataset

    return collect_dataset(out, resume=resume, progress=progress, **config)


def train(data: str | Path | Sequence[str | Path], out: str | Path, preset: str = "cpu", *, resume: bool = False,
          overrides: Sequence[str] = (), progress: bool = True, tensorboard: bool | str | Path | None = None,
          **config: Any) -> Path:
    """Train a world model on dataset(s) `data` into the run directory `out` (as `flexwm train`); keyword
    arguments are RunConfig fields (nested as dicts, e.g. train={"steps": 500}), `overrides` are `--set`
    strings; `tensorboard=True` (or a directory) also writes the curves as TensorBoard event files to
    OUT/tensorboard/ (or there). Returns the last checkpoint directory."""
    from flexwm.config import from_dict, merge, to_dict
    from flexwm.training.run import RunConfig, run_config, train_world_model

    data = [data] if isinstance(data, (str, Path)) else list(data)
    cfg = run_config(preset, data=[str(d) for d in data])
    if config:
        cfg = from_dict(RunConfig, merge(to_dict(cfg), config))
    if overrides:
        from flexwm.config import apply_overrides

        cfg = apply_overrides(cfg, list(overrides))
    return train_world_model(cfg, out, resume=resume, progress=progress, tensorboard=tensorboard)


def export(src: str | Path, out: str | Path) -> Path:
    """Write the model at `src` (run, checkpoint or exported folder) as one self-contained folder `out`."""
    from flexwm.inference import export as export_model

    return export_model(src, out)
