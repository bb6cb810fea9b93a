"""Gradient planning: optimise the action sequence by backpropagating the objective through the
differentiable action-conditioned rollout (few flow steps), with Adam, projecting onto the action bounds.

Actions are optimised in normalised units u in [-1, 1] (action = centre + half_range * u), so one learning
rate fits every embodiment. `restarts` sequences are optimised in one batch: the warm start (previous plan
shifted by the executed actions; the centre of the bounds at first), the rest uniform random, or WAM
proposals with `init="wam"`. With `fix_noise` the model's flow noise is drawn once per plan, so the objective
is a deterministic function of the actions and each Adam step descends the same landscape. The plan is the
best sequence seen over all iterations and restarts.

`steer_noise=True` instead optimises the initial noise of the WAM sampler (frames and actions generated
jointly, as in `wam`), scoring the generated frames: the actions stay those the model would generate, just
for a better draw. The noise is kept on the sphere of radius sqrt(dim) after every step. Needs a world model
with the "noise" capability (`wm.propose(noise=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.config import field
from flexwm.models.interface import LatentState, WorldModel, require
from flexwm.planning.base import Plan, WMPlanner, to_numpy
from flexwm.planning.objectives import Objective, ObjectiveConfig, rollout_and_score, rollout_noise
from flexwm.planning.sampling import shift


@dataclass
class GradConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    chunks: int = field(1, ge=1, help="plan length in model chunks of H actions")
    iterations: int = field(10, ge=1, help="Adam steps")
    lr: float = field(0.1, ge=0.0, help="Adam learning rate in normalised action units (or noise units)")
    restarts: int = field(4, ge=1, help="sequences optimised in parallel; the best is kept")
    init: str = field("warm", choices=("warm", "wam"), help="restart 0 warm-started (others random) or "
                                                            "all restarts from WAM proposals")
    fix_noise: bool = field(True, help="one draw of the model's flow noise per plan")
    flow_steps: int | None = field(2, ge=1, help="flow steps of the differentiable rollout; None = model's")
    steer_noise: bool = field(False, help="optimise the WAM sampler's initial noise instead of the actions")
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)


def adam_ascent(value_fn: Any, x0: Tensor, *, iterations: int, lr: float, project: Any) -> dict[str, Any]:
    """Maximise value_fn(x) -> ((N,) values, latents) over x (N, ...) with Adam; keeps the best x per row.

    `project(x)` is applied in place after every step (bounds, sphere). Returns the best x, value and latents
    per row, the mean value per iteration and the gradient norm per iteration.
    """
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    best_x, best_v, best_lat = x0.detach().clone(), None, None
    curve, grad_norms = [], []
    for i in range(iterations + 1):
        last = i == iterations
        with torch.set_grad_enabled(not last):
            values, latents = value_fn(x)
        v = torch.nan_to_num(values.detach().float(), nan=-float("inf"))
        if best_v is None:
            best_v, best_lat = v.clone(), latents.detach().clone()
        better = v > best_v
        best_x[better], best_v[better], best_lat[better] = x.detach()[better], v[better], latents.detach()[better]
        curve.append(float(v.mean()))
        if last:
            break
        opt.zero_grad()
        (-values.sum()).backward()
        grad_norms.append(float(x.grad.norm()))
        opt.step()
        with torch.no_grad():
            project(x)
    return {"x": best_x, "values": best_v, "latents": best_lat, "curve": curve, "grad_norm": grad_norms}


class GradientPlanner(WMPlanner):
    name = "grad"

    def __init__(self, wm: WorldModel, cfg: GradConfig, objective: Objective, low: np.ndarray, high: np.ndarray):
        super().__init__(wm, cfg.chunks if not cfg.steer_noise else 1)
        if cfg.steer_noise:
            require(wm, "noise", "grad with steer_noise=True", "steer_noise=False")
        self.cfg, self.objective = cfg, objective
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self._previous: Tensor | None = None

    def reset(self) -> None:
        self._previous = None

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        state = self.encode(frames, proprio)
        if self.cfg.steer_noise:
            return self._steer(state, instruction, generator)
        return self._actions(state, instruction, generator, executed)

    def _actions(self, state: LatentState, instruction: str, generator: torch.Generator, executed: int) -> Plan:
        cfg, R, T, A = self.cfg, self.cfg.restarts, self.horizon, self.action_dim
        like = state.context
        low, high = torch.as_tensor(self.low).to(like), torch.as_tensor(self.high).to(like)
        centre, half = (low + high) / 2, (high - low) / 2
        u0 = (torch.rand(R, T, A, generator=generator).to(like) * 2 - 1)
        if cfg.init == "wam":
            with torch.no_grad():
                proposals = self.wm.propose(state, instruction or None, R, generator=generator,
                                            steps=cfg.flow_steps)[0][0]
            pad = proposals[:, -1:].expand(R, T - proposals.shape[1], A)  # chunks > 1: hold the last action
            u0 = ((torch.cat([proposals, pad], 1) - centre) / half).clamp(-1, 1)
        else:
            u0[0] = (shift(self._previous, executed, T, centre) - centre) / half
        noise = rollout_noise(self.wm, state, T, generator) if cfg.fix_noise else None

        def value_fn(u: Tensor) -> tuple[Tensor, Tensor]:
            return rollout_and_score(self.wm, state, centre + half * u, self.objective, instruction, generator,
                                     noise, steps=cfg.flow_steps)

        out = adam_ascent(value_fn, u0, iterations=cfg.iterations, lr=cfg.lr, project=lambda u: u.clamp_(-1, 1))
        k = int(out["values"].argmax())
        actions = centre + half * out["x"][k]
        self._previous = actions
        return Plan(actions=to_numpy(actions), latents=out["latents"][k].cpu(), score=float(out["values"][k]),
                    info={"value_curve": out["curve"], "grad_norm": out["grad_norm"], "restart": k})

    def _steer(self, state: LatentState, instruction: str, generator: torch.Generator) -> Plan:
        cfg, R, like = self.cfg, self.cfg.restarts, state.context
        F, lat = self.wm.horizon // self.wm.frame_stride, tuple(like.shape[2:])
        nv, na = F * int(np.prod(lat)), self.horizon * self.action_dim
        z0 = torch.randn(R, nv + na, generator=generator).to(like)
        radius = float(np.sqrt(nv + na))

        def value_fn(z: Tensor) -> tuple[Tensor, Tensor]:
            noise = {"video": z[:, :nv].reshape(1, R, F, *lat), "actions": z[:, nv:].reshape(1, R, self.horizon, -1)}
            actions, video = self.wm.propose(state, instruction or None, R, noise=noise, steps=cfg.flow_steps)
            actions, video = actions[0], video[0]
            return self.objective(state.repeat(R), video, instruction), torch.cat(
                [video.flatten(1), actions.flatten(1)], 1)

        def project(z: Tensor) -> None:
            z.mul_(radius / z.norm(dim=1, keepdim=True).clamp_min(1e-8))

        out = adam_ascent(value_fn, z0, iterations=cfg.iterations, lr=cfg.lr, project=project)
        k = int(out["values"].argmax())
        flat = out["latents"][k]
        video = flat[: nv].reshape(F, *lat)
        actions = flat[nv:].reshape(self.horizon, self.action_dim)
        low, high = torch.as_tensor(self.low).to(like), torch.as_tensor(self.high).to(like)
        return Plan(actions=to_numpy(actions.clamp(low, high)), latents=video.cpu(), score=float(out["values"][k]),
                    info={"value_curve": out["curve"], "grad_norm": out["grad_norm"], "restart": k})
