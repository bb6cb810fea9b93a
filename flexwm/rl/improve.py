"""Improve a behaviour-cloning policy by reinforcement learning in imagination (or, for comparison, in the
real simulator with the same budget).

The algorithm is positive-advantage weighted regression with group-relative baselines (a member of the
reward-weighted-regression / AWR family, the GRPO-style baseline making it robust to the scale of the reward):

    repeat `iterations` times:
        take `starts` start states (live simulator resets, seeds never used for evaluation) and run
        `samples` rollouts from each: the BC policy with Gaussian exploration noise (std `noise` in its
        normalised [-1, 1] action space), one decision of `execute` native actions at a time, closed loop on
        the frames it sees (imagined frames decoded by the world model, or real frames)
        return R = the highest P(success) the success head gives along the imagined rollout (imagination),
            or 1/0 from the simulator's own success flag (real)
        advantage A = R - mean(R of the rollouts from the same start), w = max(A, 0) / std(A)
        `updates` AdamW steps on the w-weighted MSE between the policy's chunk and the executed noisy actions

With `start="dataset"` the rollouts are instead short imagined branches (`branch` decisions) from real frames
of the task's dataset episodes, no simulator involved: `samples` noisy first decisions per frame, then the
policy's mean; the return is the progress head at the branch's end (`reward="progress"`, dense) or its highest
P(success); only the first decision, made on the real frame, is regressed (`branch_rollouts`).

Only the executed part of a chunk is regressed; decisions after a rollout's success are not used. Imagined
rollouts run batched (one world-model call for all starts x samples per decision); imagined states carry no
proprioception, so the policy must be a BC model trained without it (`train_bc(..., use_proprio=False)`,
`flexwm train-bc --no-proprio`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexwm.config import field, to_dict, validate
from flexwm.errors import ConfigError
from flexwm.metrics import progress_bar, progress_note
from flexwm.models.interface import WorldModel


@dataclass
class ImproveConfig:
    iterations: int = field(4, ge=1, help="collect-then-update rounds")
    starts: int = field(8, ge=1, help="start states per iteration")
    samples: int = field(4, ge=2, help="noisy rollouts per start (the group of the baseline)")
    noise: float = field(0.3, ge=0.0, help="exploration std in the policy's normalised action space")
    max_steps: int = field(200, ge=1, help="native steps per rollout")
    updates: int = field(50, ge=0, help="gradient steps per iteration")
    batch_size: int = field(64, ge=1)
    lr: float = field(1e-4, ge=1e-12)
    success_threshold: float = field(0.5, ge=0.0, le=1.0, help="imagined: P(success) that ends a rollout")
    seed: int = field(20_000, help="first start seed (keep clear of evaluation seeds)")
    start: str = field("reset", choices=("reset", "dataset"),
                       help="imagined rollouts from simulator resets (whole episodes), or short branches from "
                            "real frames of dataset episodes (`branch_rollouts`; no simulator at all)")
    branch: int = field(4, ge=1, help="dataset starts: imagined decisions per branch")
    reward: str = field("success", choices=("success", "progress"),
                        help="imagined return: highest P(success) along the rollout, or the progress head at its end")
    anchor: float = field(0.0, ge=0.0, help="weight of an L2 pull towards the starting policy's actions on the "
                                            "same frames (keeps a good policy from drifting on a noisy reward)")

    def __post_init__(self) -> None:
        validate(self)


def _check_bc(bc: Any, wm: WorldModel | None) -> None:
    if bc.cfg.proprio_dim:
        raise ConfigError("the BC policy was trained with proprioception, which imagined states do not have; "
                          "train it with flexwm train-bc --no-proprio (train_bc(..., use_proprio=False))")
    if wm is not None and int(wm.action_dim) != bc.cfg.action_dim:
        raise ConfigError(f"the BC policy acts with {bc.cfg.action_dim}-d actions but the world model with "
                          f"{wm.action_dim}-d ones")


def advantage_weights(returns: np.ndarray, owner: np.ndarray) -> torch.Tensor:
    """Positive group-relative advantage weights: returns (starts, samples) -> one weight per recorded decision
    (`owner` = the rollout index, start-major, of each decision): max(R - mean of its start, 0) / std(all)."""
    adv = returns - returns.mean(1, keepdims=True)
    w = np.maximum(adv, 0).reshape(-1) / (adv.std() + 1e-6)
    return torch.as_tensor(w[owner], dtype=torch.float32)


def weighted_regression(model: torch.nn.Module, opt: torch.optim.Optimizer, predict: Any, inputs: torch.Tensor,
                        target: torch.Tensor, w: torch.Tensor, *, updates: int, batch_size: int,
                        gen: torch.Generator, extra: Any = None) -> list[float]:
    """`updates` clipped optimizer steps on the w-weighted MSE between predict(inputs[idx]) and target[idx], idx
    drawn from the rows with w > 0 (`extra(pred, inputs[idx])` may add a loss term). Returns the loss of every
    step; no step when no row is weighted."""
    pool = torch.nonzero(w > 0).flatten()
    losses: list[float] = []
    if not len(pool) or not updates:
        return losses
    model.train()
    for _ in range(updates):
        i = pool[torch.randint(0, len(pool), (batch_size,), generator=gen)]
        pred = predict(inputs[i])
        err = (pred - target[i]).pow(2).flatten(1).mean(1)
        loss = (err * w[i]).sum() / w[i].sum().clamp_min(1e-6)
        if extra is not None:
            loss = loss + extra(pred, inputs[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def iteration_row(it: int, R: np.ndarray, w: torch.Tensor, native_steps: int, losses: list[float], t0: float,
                  tag: str | None) -> dict[str, Any]:
    """One iteration's log entry (returns, weighted decisions, steps, loss, time); a line on stderr when `tag` is
    given."""
    used = int((w > 0).sum())
    row = {"iteration": it, "mean_return": float(R.mean()), "max_return": float(R.max()), "rollouts": int(R.size),
           "decisions": int(len(w)), "weighted_decisions": used, "native_steps": int(native_steps),
           "loss": float(np.mean(losses)) if losses else None, "wall_s": time.perf_counter() - t0}
    if tag:
        progress_note(f"[{tag}] iteration {it}: mean return {row['mean_return']:.3f}, {used}/{len(w)} decisions "
                      f"weighted, {row['wall_s']:.0f} s")
    return row


def _to_native(bc: Any, u: torch.Tensor) -> np.ndarray:
    return ((u + 1) / 2 * (bc.action_high - bc.action_low) + bc.action_low).cpu().numpy()


def rollouts(bc: Any, text: torch.Tensor, starts: list[Any], samples: int, cfg: ImproveConfig, execute: int,
             gen: torch.Generator, *, wm: WorldModel | None = None, env: Any = None, seeds: list[int] | None = None
             ) -> dict[str, Any]:
    """`samples` noisy rollouts from each start observation: imagined and batched when `wm` is given, else
    real, one after the other in `env` (reset to `seeds[k]` for start k). Returns the frames (D, H, W, 3)
    seen at each used decision, the executed normalised actions (D, execute, A), the rollout of each
    decision and the returns (one per rollout, start-major)."""
    n = len(starts) * samples
    decisions = cfg.max_steps // execute
    seen: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    owner: list[int] = []
    ret = np.zeros(n)

    def decide(frames: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            u = bc(torch.from_numpy(frames), None, text.expand(len(frames), -1))[:, :execute]
        u = (u + cfg.noise * torch.randn(u.shape, generator=gen)).clamp(-1, 1)
        for f, a, i in zip(frames, u.numpy(), rows):
            seen.append(f)
            acts.append(a)
            owner.append(int(i))
        return u

    if wm is not None:
        from flexwm.rl.imagination import Imagination

        frames = np.stack([s.image for s in starts for _ in range(samples)])
        imag = Imagination(wm, n)
        imag.seed(range(n), [int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) for _ in range(n)])
        imag.start(range(n), frames, [starts[i // samples].instruction for i in range(n)])
        alive = np.ones(n, bool)
        for _ in range(decisions):
            if not alive.any():
                break
            rows = np.flatnonzero(alive)
            u = decide(frames[rows], rows)
            full = np.zeros((n, execute, bc.cfg.action_dim), np.float32)  # finished rows: held still, not used
            full[rows] = _to_native(bc, u)
            imag.step(full)
            p = imag.success.numpy()
            ret[rows] = np.maximum(ret[rows], p[rows])
            alive &= p <= cfg.success_threshold
            frames = imag.images()
    else:
        for i in range(n):
            obs = env.reset(seeds[i // samples])
            for _ in range(decisions):
                u = decide(obs.image[None], np.array([i]))
                done = False
                for a in _to_native(bc, u)[0]:
                    res = env.step(a)
                    obs = res.observation
                    if res.success:
                        ret[i] = 1.0
                    if res.success or res.done:
                        done = True
                        break
                if done:
                    break
    return {"frames": np.stack(seen), "actions": np.stack(acts), "owner": np.asarray(owner), "returns": ret}


def branch_rollouts(bc: Any, text: torch.Tensor, frames: np.ndarray, samples: int, cfg: ImproveConfig, execute: int,
                    gen: torch.Generator, wm: WorldModel, instruction: str | None) -> dict[str, Any]:
    """Short imagined branches from real frames (S, H, W, 3): `samples` noisy first decisions per frame, then
    `cfg.branch - 1` decisions of the policy's mean on the imagined frames. Only the first decision, taken on the
    real frame, is returned for training, so the policy is never fitted to imagined images; its return is the
    branch's highest P(success) or final progress (`cfg.reward`). Short branches stay where the model is accurate."""
    from flexwm.rl.imagination import Imagination

    n = len(frames) * samples
    start = np.repeat(frames, samples, 0)
    imag = Imagination(wm, n)
    imag.seed(range(n), [int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) for _ in range(n)])
    imag.start(range(n), start, [instruction] * n)
    with torch.no_grad():
        u = bc(torch.from_numpy(start), None, text.expand(n, -1))[:, :execute]
    u = (u + cfg.noise * torch.randn(u.shape, generator=gen)).clamp(-1, 1)
    first = u.numpy().copy()
    best = np.zeros(n)
    for d in range(cfg.branch):
        if d:
            with torch.no_grad():
                u = bc(torch.from_numpy(imag.images()), None, text.expand(n, -1))[:, :execute]
        imag.step(_to_native(bc, u))
        best = np.maximum(best, imag.success.numpy())
    ret = best if cfg.reward == "success" else imag.progress.numpy().astype(float)
    return {"frames": start, "actions": first, "owner": np.arange(n), "returns": ret}


def dataset_start_frames(dataset: Any, episodes: list[int], n: int, rng: np.random.Generator,
                         cache: dict[int, np.ndarray]) -> np.ndarray:
    """n real frames (n, H, W, 3) at uniformly random times of uniformly random `episodes` of `dataset`."""
    out = []
    for _ in range(n):
        i = int(episodes[int(rng.integers(len(episodes)))])
        if i not in cache:
            cache[i] = dataset.load_episode(i).frames
        out.append(cache[i][int(rng.integers(len(cache[i])))])
    return np.stack(out)


def improve_bc(bc: Any, task: str, cfg: ImproveConfig | None = None, *, wm: WorldModel | None = None,
               env_name: str = "metaworld", env: Any = None, instruction: str | None = None,
               text_encoder: Any = None, progress: bool = False, dataset: Any = None,
               episodes: list[int] | None = None, env_options: Any = None,
               on_iteration: Callable[[dict[str, Any]], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune a copy of `bc` on `task` by RL in the world model `wm` (or in the real simulator when `wm`
    is None). The simulator (`env`, else make_env(env_name, task, env_options=)) gives the start states, and the
    rollouts
    when `wm` is None. With `cfg.start == "dataset"` the imagined rollouts are short branches from real frames
    of `episodes` of `dataset` (`branch_rollouts`) and no simulator is used. `progress`: a bar over the iterations
    and one line per iteration on stderr; `on_iteration(row)` receives each iteration's log entry. Returns (the
    improved model, a log: per-iteration mean return, used decisions, time)."""
    from flexwm.envs import make_env, task_instruction
    from flexwm.errors import EnvError

    cfg = cfg or ImproveConfig()
    _check_bc(bc, wm)
    if text_encoder is None:
        from flexwm.models.text import make_text_encoder

        text_encoder = make_text_encoder(bc.cfg.text_encoder)
    if instruction is None and env is not None:
        instruction = env.instruction
    if instruction is None:
        try:
            instruction = task_instruction(env_name, task, env_options)
        except EnvError:  # a task flexwm has no instructions for
            instruction = task
    text = torch.as_tensor(text_encoder.embed([instruction])).float()
    model = copy.deepcopy(bc).train()
    reference = copy.deepcopy(bc).eval() if cfg.anchor else None  # the starting policy, frozen
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    execute = int(wm.frame_stride) if wm is not None else max(1, bc.cfg.horizon // 2)
    execute = min(execute, bc.cfg.horizon)
    size = tuple(bc.cfg.image_size)
    branched = cfg.start == "dataset"
    if branched:
        if wm is None or dataset is None or not episodes:
            raise ConfigError("start='dataset' branches imagined rollouts from dataset frames: give wm=, dataset= "
                              "and episodes= (the task's episodes)")
        if wm.frame_stride and execute % int(wm.frame_stride):
            raise ConfigError(f"execute {execute} must be a multiple of the model's frame_stride {wm.frame_stride}")
        if tuple(dataset.image_size) != size:
            raise ConfigError(f"dataset {dataset.root} has {tuple(dataset.image_size)} frames but the BC policy "
                              f"expects {size}")
    elif cfg.reward != "success":
        raise ConfigError("reward='progress' is for short branches (start='dataset'); whole imagined episodes are "
                          "scored by their highest P(success)")
    frame_rng, frame_cache = np.random.default_rng(cfg.seed), {}
    own_env = env is None and not branched
    if own_env:
        env = make_env(env_name, task, image_size=size, max_episode_steps=cfg.max_steps, env_options=env_options)

    def act(policy: Any, frames: torch.Tensor) -> torch.Tensor:
        return policy(frames, None, text.expand(len(frames), -1))[:, :execute]

    def anchor_loss(pred: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = act(reference, frames)
        return cfg.anchor * (pred - ref).pow(2).mean()

    log: list[dict[str, Any]] = []
    backend = "imagined" if wm is not None else "real"
    bar = progress_bar(cfg.iterations, f"improve {task} {backend}", enabled=progress, unit="iter")
    try:
        for it in range(cfg.iterations):
            t0 = time.perf_counter()
            model.eval()
            if branched:
                frames = dataset_start_frames(dataset, episodes, cfg.starts, frame_rng, frame_cache)
                data = branch_rollouts(model, text, frames, cfg.samples, cfg, execute, gen, wm, instruction)
            else:
                seeds = [cfg.seed + it * cfg.starts + s for s in range(cfg.starts)]
                starts = [env.reset(s) for s in seeds]
                data = rollouts(model, text, starts, cfg.samples, cfg, execute, gen, wm=wm, env=env, seeds=seeds)
            R = data["returns"].reshape(cfg.starts, cfg.samples)
            w = advantage_weights(R, data["owner"])
            losses = weighted_regression(model, opt, lambda f: act(model, f), torch.from_numpy(data["frames"]),
                                         torch.from_numpy(data["actions"]).float(), w, updates=cfg.updates,
                                         batch_size=cfg.batch_size, gen=gen, extra=anchor_loss if cfg.anchor else None)
            log.append(iteration_row(it, R, w, len(w) * execute * (cfg.branch if branched else 1), losses, t0,
                                     f"improve {task} {backend}" if progress else None))
            bar.update(1)
            bar.set_postfix(mean_return=f"{log[-1]['mean_return']:.3f}")
            if on_iteration is not None:
                on_iteration(log[-1])
    finally:
        bar.close()
        if own_env:
            env.close()
    return model.eval(), {"config": to_dict(cfg), "backend": "imagination" if wm is not None else "real",
                          "task": task, "instruction": instruction, "execute": execute, "iterations": log,
                          "wall_s": sum(r["wall_s"] for r in log),
                          "native_steps": sum(r["native_steps"] for r in log)}


def improve_run(bc: str | Path, task: str, out: str | Path, cfg: ImproveConfig | None = None, *,
                ckpt: str | Path | None = None, real: bool = False, env_name: str = "metaworld", flow_steps: int = 4,
                data: str | Path | None = None, device: str = "cpu", progress: bool = False,
                command: list[str] | None = None, env_options: Any = None,
                tensorboard: bool | str | Path | None = None) -> dict[str, Any]:
    """`flexwm improve`: improve the BC model in folder `bc` on `task` by RL in the world model at `ckpt` (or in
    the real simulator with `real`), and write the improved model and OUT/improve_log.json to `out`. With
    `cfg.start == "dataset"`, imagined branches start from frames of `data`'s episodes of the task (the run's
    held-out episodes excluded). `tensorboard` (off by default): each iteration's returns, weighted decisions and
    loss as TensorBoard event files in OUT/tensorboard/ (True) or the given directory. Returns the log."""

    from flexwm.config import check_device
    from flexwm.io import atomic_write_json, plain_json
    from flexwm.metrics import check_tensorboard, tensorboard_log
    from flexwm.planning import BCModel

    check_device(device)
    if tensorboard not in (None, False):
        check_tensorboard()
    cfg = cfg or ImproveConfig()
    out = Path(out)
    if (ckpt is None) == (not real):
        raise ConfigError("give --ckpt RUN (train in imagination) or --real (train in the simulator), not both")
    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a model; choose another --out or remove it")
    policy = BCModel.from_pretrained(bc)
    wm = None
    if ckpt is not None:
        from flexwm.envs import embodiment_of
        from flexwm.inference import load_run

        wm = load_run(ckpt, steps=flow_steps, device=device, prefer_embodiment=embodiment_of(env_name))
    kw: dict[str, Any] = {}
    if cfg.start == "dataset":
        if data is None or ckpt is None:
            raise ConfigError("--set start=dataset needs --ckpt RUN and --data DATA (the frames to branch from)")
        from flexwm.data import FlexDataset
        from flexwm.runs import run_heldout

        ds = FlexDataset(data)
        try:
            held = set(run_heldout(ckpt, data, "improve --set start=dataset")[1])
        except ConfigError:
            held = set()  # a dataset the run was not trained on: every episode is new to it
        kw = {"dataset": ds, "episodes": [i for i, e in enumerate(ds.episodes) if e["env_task"] == task
                                          and i not in held]}
        if not kw["episodes"]:
            raise ConfigError(f"{data} has no episodes of task {task!r} to branch from")
    tb = tensorboard_log(tensorboard, out)
    try:
        model, log = improve_bc(policy, task, cfg, wm=wm, env_name=env_name, progress=progress,
                                env_options=env_options, **kw,
                                on_iteration=None if tb is None else lambda row: tb.log(row["iteration"], **row))
    finally:
        if tb is not None:
            tb.close()
    model.save_pretrained(out)
    log = {**log, "bc": str(bc), "ckpt": None if ckpt is None else str(ckpt), "command": " ".join(command or [])}
    atomic_write_json(out / "improve_log.json", plain_json(log))
    return log

