"""What planners maximise, as plain functions of imagined latents: `objective(state, future, instruction) -> (B,)`.

* `SuccessObjective`: the world model's success / value head (`wm.score`) on the imagined frames with the
  instruction: success_weight * P(success) + progress_weight * progress. A plan longer than one model chunk is
  scored window by window (F frames each, seeing the C latents before them): the final window, or the mean
  over all windows.
* `GoalObjective`: negative mean squared latent distance of the final (or every) imagined frame to
  `wm.encode(goal_image)`.

Higher is better for both. `rollout_and_score` imagines a batch of action sequences (AC mode) and scores them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from flexwm.config import field
from flexwm.errors import ConfigError
from flexwm.models.interface import LatentState, WorldModel


@dataclass
class ObjectiveConfig:
    kind: str = field("success", choices=("success", "goal"), help="value head + instruction, or a goal image")
    success_weight: float = field(1.0, ge=0.0, help="weight of P(success) (success objective)")
    progress_weight: float = field(1.0, ge=0.0, help="weight of predicted progress in [0, 1] (success objective)")
    frames: str = field("final", choices=("final", "all"), help="score the final frames or all of them (mean)")


class Objective(Protocol):
    def __call__(self, state: LatentState, future: Tensor, instruction: str | None) -> Tensor: ...


class SuccessObjective:
    def __init__(self, wm: WorldModel, success_weight: float = 1.0, progress_weight: float = 1.0,
                 frames: str = "final"):
        self.wm, self.success_weight, self.progress_weight, self.frames = wm, success_weight, progress_weight, frames
        self.window = max(1, wm.horizon // wm.frame_stride)  # F: latents the score head sees at once

    def __call__(self, state: LatentState, future: Tensor, instruction: str | None) -> Tensor:
        F, n = self.window, future.shape[1]
        if n % F:
            raise ConfigError(f"an imagined plan of {n} frames cannot be scored in windows of {F} frames; plan a "
                              f"multiple of the model's horizon ({self.wm.horizon} actions)")
        C = state.context.shape[1]
        seq = torch.cat([state.context, future], 1)
        windows = range(n // F) if self.frames == "all" else [n // F - 1]
        values = []
        for j in windows:  # window j sees the C latents before it; imagined states have no proprio
            st = dataclasses.replace(state, context=seq[:, j * F: j * F + C],
                                     proprio=state.proprio if j == 0 else None)
            p, progress = self.wm.score(st, future[:, j * F:(j + 1) * F], instruction or None)
            values.append(self.success_weight * p + self.progress_weight * progress)
        return torch.stack(values).mean(0)


class GoalObjective:
    def __init__(self, wm: WorldModel, goal_image: Any, frames: str = "final"):
        img = np.asarray(goal_image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise ConfigError(f"the goal image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        expected = wm.image_size
        if expected is not None and tuple(img.shape[:2]) != tuple(expected):
            raise ConfigError(f"the goal image is {img.shape[0]}x{img.shape[1]} but the world model sees "
                              f"{expected[0]}x{expected[1]} frames; render or resize the goal at the camera's size")
        with torch.no_grad():
            self.goal = wm.encode(img[None]).context[0, -1].detach()  # (c, h, w)
        self.image_shape, self.frames = img.shape, frames

    def __call__(self, state: LatentState, future: Tensor, instruction: str | None) -> Tensor:
        if tuple(self.goal.shape) != tuple(future.shape[2:]):
            raise ConfigError(f"the goal image {self.image_shape} encodes to latents {tuple(self.goal.shape)} but "
                              f"the observations give {tuple(future.shape[2:])}; use a goal image of the "
                              "observations' size")
        d = (future - self.goal.to(future)).pow(2).flatten(2).mean(-1)  # (B, F')
        return -(d[:, -1] if self.frames == "final" else d.mean(1))


def make_objective(cfg: ObjectiveConfig, wm: WorldModel, goal_image: Any = None) -> Objective:
    if cfg.kind == "goal":
        if goal_image is None:
            raise ConfigError("objective kind 'goal' needs a goal image: pass goal_image= (uint8 H x W x 3)")
        return GoalObjective(wm, goal_image, cfg.frames)
    return SuccessObjective(wm, cfg.success_weight, cfg.progress_weight, cfg.frames)


def rollout_noise(wm: WorldModel, state: LatentState, n_actions: int, generator: torch.Generator) -> Tensor:
    """Initial flow noise (1, n_chunks, F, c, h, w) for `wm.rollout`, shared by candidates (common random
    numbers: candidates are compared under the same model randomness, so ranking them is less noisy)."""
    H, F = wm.horizon, max(1, wm.horizon // wm.frame_stride)
    n_chunks = -(-n_actions // H)
    noise = torch.randn(1, n_chunks, F, *state.context.shape[2:], generator=generator)
    return noise.to(state.context)


def rollout_and_score(wm: WorldModel, state: LatentState, actions: Tensor, objective: Objective,
                      instruction: str | None, generator: torch.Generator, noise: Tensor | None = None, *,
                      steps: int | None = None) -> tuple[Tensor, Tensor]:
    """Imagine N action sequences (N, T, A) from a single state (AC mode) -> (values (N,), latents (N, F', ...)).

    `noise` (1 or N, n_chunks, F, c, h, w) fixes the model's initial flow noise; None draws it per candidate.
    `steps`: flow-sampling steps of the rollout (None: the model's default).
    """
    N = actions.shape[0]
    rep = state.repeat(N) if state.batch_size == 1 else state
    if noise is not None and noise.shape[0] == 1:
        noise = noise.expand(N, *noise.shape[1:])
    latents = wm.rollout(rep, actions, generator=generator, noise=noise, steps=steps)
    return objective(rep, latents, instruction), latents
