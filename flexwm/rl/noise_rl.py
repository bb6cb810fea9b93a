"""Steer the WAM mode by RL over its initial noise (latent-space RL, as DSRL does for diffusion policies).

The world-action model turns an instruction and initial noise into actions. Its weights stay frozen; a small
*noise policy* mu(observation latent) -> initial action noise (H, A) is learned instead, so the WAM keeps
producing actions it knows how to produce, only from better draws:

    noise_actions = mu(context latents) + std * N(0, I)      (the video noise stays N(0, I))
    actions       = WAM(context, instruction, noise)          (`wm.propose(..., noise=...)`)

With mu = 0 and std = 1 this is exactly the WAM (the policy's last layer starts at zero). Training is the
same positive-advantage weighted regression with group-relative baselines as `flexwm.rl.improve`:

    repeat `iterations` times:
        `starts` start states (live simulator resets, seeds clear of evaluation seeds) x `samples` rollouts,
        one decision every `execute` native actions, in imagination (batched, the success head's highest
        P(success) along the rollout as return) or in the real simulator (its success flag)
        advantage A = R - mean(R of the same start), w = max(A, 0) / std(A)
        `updates` AdamW steps on the w-weighted MSE between mu(context) and the noise that was used

Imagined and real rollouts see the same observation: the model's context latents without proprioception
(imagined states have none), so the WAM is also run without proprioception here.

    pol, log = steer_wam(wm, "button-press-v3", NoiseRLConfig(iterations=3), imagine=True)
    policy = steered_wam_policy(wm, pol)      # flexwm.planning.steered: a RecedingHorizonPolicy
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexwm.config import field, to_dict, validate
from flexwm.errors import ConfigError
from flexwm.metrics import progress_bar
from flexwm.models.interface import WorldModel
from flexwm.planning.base import check_action_dim, to_numpy
from flexwm.planning.steered import NoisePolicy, make_noise_policy, steered_actions, steered_wam_policy
from flexwm.rl.improve import advantage_weights, iteration_row, weighted_regression


@dataclass
class NoiseRLConfig:
    iterations: int = field(3, ge=1, help="collect-then-update rounds")
    starts: int = field(8, ge=1, help="start states per iteration")
    samples: int = field(4, ge=2, help="rollouts per start (the group of the baseline)")
    std: float = field(1.0, ge=0.0, help="exploration std of the action noise (1 with mu = 0: the WAM itself)")
    eval_std: float = field(1.0, ge=0.0, help="noise std when the steered policy is evaluated")
    max_steps: int = field(200, ge=1, help="native steps per rollout")
    execute: int | None = field(None, ge=1, help="actions executed per decision; None = frame_stride")
    updates: int = field(100, ge=0, help="gradient steps per iteration")
    batch_size: int = field(64, ge=1)
    lr: float = field(1e-3, ge=1e-12)
    hidden: int = field(256, ge=1, help="noise-policy MLP width")
    success_threshold: float = field(0.5, ge=0.0, le=1.0, help="imagined: P(success) that ends a rollout")
    seed: int = field(20_000, help="first start seed (keep clear of evaluation seeds)")

    def __post_init__(self) -> None:
        validate(self)


def _imagined_rollouts(wm: WorldModel, pol: NoisePolicy, starts: list[Any], cfg: NoiseRLConfig, execute: int,
                       gen: torch.Generator) -> dict[str, Any]:
    from flexwm.rl.imagination import Imagination

    n = len(starts) * cfg.samples
    ctxs, zs, owner, ret = [], [], [], np.zeros(n)
    imag = Imagination(wm, n)
    imag.seed(range(n), [int(torch.randint(0, 2**31 - 1, (1,), generator=gen)) for _ in range(n)])
    imag.start(range(n), np.stack([s.image for s in starts for _ in range(cfg.samples)]),
               [starts[i // cfg.samples].instruction for i in range(n)])
    alive = np.ones(n, bool)
    for _ in range(cfg.max_steps // execute):
        if not alive.any():
            break
        rows = np.flatnonzero(alive)
        ctx = imag.context[rows]
        with torch.no_grad():
            z = pol(ctx) + cfg.std * torch.randn((len(rows), int(wm.horizon), int(wm.action_dim)), generator=gen)
        full = np.zeros((n, execute, int(wm.action_dim)), np.float32)  # finished rows: held still, not used
        for ins in {starts[r // cfg.samples].instruction for r in rows}:  # one WAM call per instruction
            sel = np.array([starts[r // cfg.samples].instruction == ins for r in rows])
            full[rows[sel]] = to_numpy(steered_actions(wm, ctx[sel], ins, z[sel], gen)[0][:, :execute])
        ctxs.append(ctx.cpu())
        zs.append(z)
        owner.append(rows)
        imag.step(full)
        p = imag.success.numpy()
        ret[rows] = np.maximum(ret[rows], p[rows])
        alive &= p <= cfg.success_threshold
    return {"context": torch.cat(ctxs), "noise": torch.cat(zs), "owner": np.concatenate(owner), "returns": ret}


def _real_rollouts(wm: WorldModel, pol: NoisePolicy, env: Any, seeds: list[int], cfg: NoiseRLConfig, execute: int,
                   gen: torch.Generator) -> dict[str, Any]:
    ctxs, zs, owner, ret = [], [], [], np.zeros(len(seeds) * cfg.samples)
    policy = steered_wam_policy(wm, pol, cfg.std, execute=execute, record=True)
    planner = policy.planner
    for i in range(len(ret)):
        policy.reset(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        planner.records.clear()
        obs = env.reset(seeds[i // cfg.samples])
        for _ in range(cfg.max_steps):
            res = env.step(policy.act(obs))
            obs = res.observation
            if res.success:
                ret[i] = 1.0
            if res.success or res.done:
                break
        ctxs += [c for c, _ in planner.records]
        zs += [z for _, z in planner.records]
        owner += [i] * len(planner.records)
    return {"context": torch.stack(ctxs), "noise": torch.stack(zs), "owner": np.asarray(owner), "returns": ret}


def steer_wam(wm: WorldModel, task: str, cfg: NoiseRLConfig | None = None, *, imagine: bool = True,
              env_name: str = "metaworld", env: Any = None, policy: NoisePolicy | None = None,
              progress: bool = False, env_options: Any = None,
              on_iteration: Any = None) -> tuple[NoisePolicy, dict[str, Any]]:
    """Learn a noise policy for the WAM of `wm` on `task`, in imagination (`imagine=True`) or in the real
    simulator. `progress`: a bar over the iterations and one line per iteration on stderr; `on_iteration(row)`
    receives each iteration's log entry. Returns (the noise policy, a log: per-iteration mean return, decisions,
    time)."""
    import copy

    from flexwm.envs import make_env

    cfg = cfg or NoiseRLConfig()
    pol = copy.deepcopy(policy) if policy is not None else make_noise_policy(wm, cfg.hidden)
    execute = min(int(cfg.execute or wm.frame_stride), int(wm.horizon))
    if imagine and execute % int(wm.frame_stride):
        raise ConfigError(f"in imagination execute must be a multiple of frame_stride={wm.frame_stride}, got {execute}")
    opt = torch.optim.AdamW(pol.parameters(), lr=cfg.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    own_env = env is None
    if own_env:
        env = make_env(env_name, task, image_size=wm.image_size or (64, 64), max_episode_steps=cfg.max_steps,
                       env_options=env_options)
    check_action_dim(env.action_space.shape[0], wm.action_dim, f"{env_name}/{task}", "the world model")
    log: list[dict[str, Any]] = []
    backend = "imagined" if imagine else "real"
    bar = progress_bar(cfg.iterations, f"steer-wam {task} {backend}", enabled=progress, unit="iter")
    try:
        for it in range(cfg.iterations):
            t0 = time.perf_counter()
            seeds = [cfg.seed + it * cfg.starts + s for s in range(cfg.starts)]
            pol.eval()
            if imagine:
                data = _imagined_rollouts(wm, pol, [env.reset(s) for s in seeds], cfg, execute, gen)
            else:
                data = _real_rollouts(wm, pol, env, seeds, cfg, execute, gen)
            R = data["returns"].reshape(cfg.starts, cfg.samples)
            w = advantage_weights(R, data["owner"])
            losses = weighted_regression(pol, opt, pol, data["context"], data["noise"].float(), w,
                                         updates=cfg.updates, batch_size=cfg.batch_size, gen=gen)
            log.append(iteration_row(it, R, w, len(w) * execute, losses, t0,
                                     f"steer-wam {task} {backend}" if progress else None))
            bar.update(1)
            bar.set_postfix(mean_return=f"{log[-1]['mean_return']:.3f}")
            if on_iteration is not None:
                on_iteration(log[-1])
    finally:
        bar.close()
        if own_env:
            env.close()
    return pol.eval(), {"config": to_dict(cfg), "backend": "imagination" if imagine else "real", "task": task,
                        "execute": execute, "iterations": log, "wall_s": sum(r["wall_s"] for r in log),
                        "native_steps": sum(r["native_steps"] for r in log)}


def steer_wam_run(ckpt: str | Path, task: str, out: str | Path, cfg: NoiseRLConfig | None = None, *,
                  real: bool = False, env_name: str = "metaworld", flow_steps: int = 4, device: str = "cpu",
                  progress: bool = False, command: list[str] | None = None,
                  env_options: Any = None, tensorboard: bool | str | Path | None = None) -> dict[str, Any]:
    """`flexwm steer-wam`: learn a noise policy for the WAM of the model at `ckpt` on `task` (in imagination, or
    in the real simulator with `real`) and save it to `out` with its log. `tensorboard` (off by default): each
    iteration's returns and loss as TensorBoard event files in OUT/tensorboard/ (True) or the given directory.
    Returns the log."""

    from flexwm.config import check_device
    from flexwm.envs import embodiment_of
    from flexwm.inference import load_run
    from flexwm.io import plain_json
    from flexwm.metrics import check_tensorboard, tensorboard_log

    check_device(device)
    if tensorboard not in (None, False):
        check_tensorboard()
    out = Path(out)
    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a noise policy; choose another --out or remove it")
    wm = load_run(ckpt, steps=flow_steps, device=device, prefer_embodiment=embodiment_of(env_name))
    tb = tensorboard_log(tensorboard, out)
    try:
        pol, log = steer_wam(wm, task, cfg or NoiseRLConfig(), imagine=not real, env_name=env_name, progress=progress,
                             env_options=env_options,
                             on_iteration=None if tb is None else lambda row: tb.log(row["iteration"], **row))
    finally:
        if tb is not None:
            tb.close()
    pol.save_pretrained(out, plain_json({"log": log, "run": str(ckpt), "command": " ".join(command or [])}))
    return log
