"""Sampling-based planning over action sequences in action-conditioned (AC) mode: CEM and MPPI.

Each iteration samples `population` action sequences around a Gaussian (mean, std) clipped to the action
bounds, imagines them all in one batched `wm.rollout`, scores them with the objective and refits the
Gaussian to the best `elites`:

* CEM: uniform elite mean / std, smoothed with `momentum` (new = m * old + (1 - m) * elites), std floor;
* MPPI (as in TD-MPC2): elites weighted by softmax(value / temperature); here the values are first divided by
  the elite value range, so `temperature` does not depend on the objective's scale; std clamped to
  [min_std, max_std].

The current mean is always one of the candidates, so a good warm start is never lost. The plan is the final
mean, or the best candidate seen if that scored higher under the same model noise. Warm start: the
previous plan's mean shifted by the actions executed since, padded with its last action. By default every
candidate of a plan sees the same model noise (common random numbers), so candidates are ranked on their
actions and not on luck. Stds are in units of the half action range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.config import field
from flexwm.errors import ConfigError
from flexwm.models.interface import WorldModel
from flexwm.planning.base import Plan, WMPlanner, to_numpy
from flexwm.planning.objectives import Objective, ObjectiveConfig, rollout_and_score, rollout_noise

Evaluate = Callable[[Tensor], tuple[Tensor, Tensor]]  # actions (N, T, A) -> values (N,), latents (N, F', ...)


@dataclass
class CEMConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    chunks: int = field(1, ge=1, help="plan length in model chunks of H actions")
    population: int = field(64, ge=2, help="candidate action sequences per iteration (one batched rollout)")
    iterations: int = field(4, ge=1)
    elites: int = field(8, ge=1)
    init_std: float = field(0.5, ge=0.0, help="initial std, in half action ranges")
    min_std: float = field(0.05, ge=0.0, help="std floor, in half action ranges")
    momentum: float = field(0.1, ge=0.0, le=1.0, help="weight of the old mean/std in each update")
    warm_start: bool = field(True, help="start from the previous plan shifted by the executed actions")
    common_noise: bool = field(True, help="all candidates of a plan share the model's flow noise")
    flow_steps: int | None = field(None, ge=1, help="flow-sampling steps per rollout; None = the model's")
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.elites > self.population:
            raise ConfigError(f"config key 'elites' = {self.elites} must be <= 'population' = {self.population}")


@dataclass
class MPPIConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    chunks: int = field(1, ge=1, help="plan length in model chunks of H actions")
    population: int = field(64, ge=2)
    iterations: int = field(4, ge=1)
    elites: int = field(8, ge=1)
    temperature: float = field(0.5, ge=1e-4, help="softmax temperature, in units of the elite value range")
    init_std: float = field(0.5, ge=0.0, help="in half action ranges (TD-MPC2: max_std 2, min_std 0.05)")
    min_std: float = field(0.05, ge=0.0)
    max_std: float = field(2.0, ge=0.0)
    warm_start: bool = field(True)
    common_noise: bool = field(True)
    flow_steps: int | None = field(None, ge=1)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def __post_init__(self) -> None:
        if self.elites > self.population:
            raise ConfigError(f"config key 'elites' = {self.elites} must be <= 'population' = {self.population}")
        if self.min_std > self.max_std:
            raise ConfigError(f"config key 'min_std' = {self.min_std} must be <= 'max_std' = {self.max_std}")


def cem_update(elites: Tensor, values: Tensor, mean: Tensor, std: Tensor, *, momentum: float,
               min_std: Tensor, max_std: Tensor | None = None) -> tuple[Tensor, Tensor]:
    new_mean, new_std = elites.mean(0), elites.std(0, unbiased=False)
    mean, std = momentum * mean + (1 - momentum) * new_mean, momentum * std + (1 - momentum) * new_std
    return mean, torch.maximum(std, min_std)


def mppi_update(elites: Tensor, values: Tensor, mean: Tensor, std: Tensor, *, temperature: float,
                min_std: Tensor, max_std: Tensor) -> tuple[Tensor, Tensor]:
    scale = (values.max() - values.min()).clamp_min(1e-8)
    w = torch.softmax((values - values.max()) / (temperature * scale), 0)[:, None, None]
    mean = (w * elites).sum(0)
    std = (w * (elites - mean) ** 2).sum(0).sqrt()
    return mean, torch.minimum(torch.maximum(std, min_std), max_std)


def optimise_sampling(evaluate: Evaluate, mean: Tensor, std: Tensor, low: Tensor, high: Tensor, *,
                      population: int, iterations: int, elites: int, update: Callable[..., tuple[Tensor, Tensor]],
                      generator: torch.Generator) -> dict[str, Any]:
    """The shared CEM / MPPI loop. mean, std: (T, A). Returns the final mean, the best candidate seen
    (actions, value, latents) and the best value per iteration."""
    best: dict[str, Any] = {"value": -float("inf")}
    history = []
    for _ in range(iterations):
        eps = torch.randn(population - 1, *mean.shape, generator=generator).to(mean)
        actions = torch.cat([mean[None], mean + std * eps]).clamp(low, high)  # candidate 0: the mean
        values, latents = evaluate(actions)
        values = torch.nan_to_num(values.float(), nan=-float("inf"))
        i = int(values.argmax())
        if float(values[i]) > best["value"]:
            best = {"value": float(values[i]), "actions": actions[i], "latents": latents[i]}
        history.append(float(values[i]))
        top = values.topk(elites).indices
        mean, std = update(actions[top], values[top], mean, std)
    return {"mean": mean.clamp(low, high), "std": std, "best": best, "history": history}


def shift(previous: Tensor | None, executed: int, horizon: int, fill: Tensor) -> Tensor:
    """The previous plan advanced by `executed` steps and padded with its last action (or `fill` (A,))."""
    if previous is None or executed >= previous.shape[0] or previous.shape[0] != horizon:
        return fill.expand(horizon, -1).clone()
    rest = previous[executed:]
    return torch.cat([rest, rest[-1:].expand(executed, -1)])


class SamplingPlanner(WMPlanner):
    """`cem` or `mppi` over action sequences of `chunks` x H actions."""

    def __init__(self, wm: WorldModel, cfg: CEMConfig | MPPIConfig, objective: Objective, low: np.ndarray,
                 high: np.ndarray, method: str):
        super().__init__(wm, cfg.chunks)
        if method not in ("cem", "mppi"):
            raise ConfigError(f"unknown sampling method {method!r}; choose 'cem' or 'mppi'")
        self.cfg, self.objective, self.method, self.name = cfg, objective, method, method
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self._previous: Tensor | None = None

    def reset(self) -> None:
        self._previous = None

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        cfg = self.cfg
        state = self.encode(frames, proprio)
        like = state.context
        low, high = torch.as_tensor(self.low).to(like), torch.as_tensor(self.high).to(like)
        half = (high - low) / 2
        prev = self._previous if cfg.warm_start else None
        mean = shift(prev, executed, self.horizon, (low + high) / 2)
        std = (cfg.init_std * half).expand_as(mean).clone()
        if self.method == "cem":
            def update(e: Tensor, v: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
                return cem_update(e, v, m, s, momentum=cfg.momentum, min_std=cfg.min_std * half)
        else:
            def update(e: Tensor, v: Tensor, m: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
                return mppi_update(e, v, m, s, temperature=cfg.temperature, min_std=cfg.min_std * half,
                                   max_std=cfg.max_std * half)
        with torch.no_grad():
            noise = rollout_noise(self.wm, state, self.horizon, generator) if cfg.common_noise else None

            def evaluate(actions: Tensor) -> tuple[Tensor, Tensor]:
                return rollout_and_score(self.wm, state, actions, self.objective, instruction, generator, noise,
                                         steps=cfg.flow_steps)

            out = optimise_sampling(evaluate, mean, std, low, high, population=cfg.population,
                                    iterations=cfg.iterations, elites=cfg.elites, update=update,
                                    generator=generator)
            value, latents = evaluate(out["mean"][None])  # imagine and score the final mean
        actions, value, latents, chosen = out["mean"], float(value[0]), latents[0], "mean"
        best = out["best"]
        if cfg.common_noise and best["value"] > value:  # same noise: the values are comparable
            actions, value, latents, chosen = best["actions"], best["value"], best["latents"], "best sample"
        self._previous = actions
        return Plan(actions=to_numpy(actions), latents=latents.detach().cpu(), score=value,
                    info={"best_per_iteration": out["history"], "chosen": chosen})
