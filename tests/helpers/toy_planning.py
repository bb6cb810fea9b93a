"""A toy WorldModel with known optima, for planner tests: a 2-D point mass.

Frames are 8x8 images whose red / green levels encode the position (x, y) in [-1, 1]; the latent of a frame
is its position, shaped (2, 1, 1). rollout = cumulative sum of dt * actions; score = closeness of the final
imagined position to the goal; propose = noisy actions toward the goal; inverse = position differences.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flexwm.envs.base import Observation
from flexwm.models.interface import LatentState


def render(pos) -> np.ndarray:
    """(2,) position -> (8, 8, 3) uint8 frame."""
    x, y = (np.clip(np.asarray(pos, float), -1, 1) + 1) * 127.5
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0], img[..., 1] = round(x), round(y)
    return img


def observation(pos=(0.0, 0.0), instruction: str = "reach the goal") -> Observation:
    return Observation(image=render(pos), proprio=np.asarray(pos, np.float32), instruction=instruction)


class PointMass:
    embodiment = "toy"
    action_dim = 2
    horizon = 4
    frame_stride = 2
    context_frames = 1
    image_size = (8, 8)

    def __init__(self, goal=(0.6, -0.6), dt: float = 0.1, propose_noise: float = 0.5, rollout_noise: float = 0.0,
                 lying_proposals: bool = False, instruction_goals: dict | None = None):
        self.goal = torch.tensor(goal, dtype=torch.float32)
        self.instruction_goals = instruction_goals or {}  # propose heads here for these instructions
        self.dt, self.propose_noise, self.rollout_noise = dt, propose_noise, rollout_noise
        self.lying_proposals = lying_proposals  # propose claims to reach the goal whatever its actions do
        self.calls = {"rollout": 0, "propose": 0, "score": 0}

    def encode(self, frames, proprio=None) -> LatentState:
        f = torch.as_tensor(np.asarray(frames))
        if f.dim() == 4:
            f = f[:, None]
        pos = f[..., :2].float().mean(dim=(2, 3)) / 127.5 - 1  # (B, T, 2)
        return LatentState(context=pos[:, -self.context_frames:, :, None, None], proprio=None, embodiment="toy")

    def rollout(self, state: LatentState, actions: Tensor, *, generator=None, noise=None) -> Tensor:
        self.calls["rollout"] += 1
        path = state.context[:, -1, :, 0, 0][:, None] + self.dt * actions.cumsum(1)
        if self.rollout_noise:
            path = path + self.rollout_noise * torch.randn(path.shape, generator=generator)
        return path[:, self.frame_stride - 1::self.frame_stride, :, None, None]

    def propose(self, state: LatentState, instruction, n: int, *, generator=None) -> tuple[Tensor, Tensor]:
        self.calls["propose"] += 1
        B = state.batch_size
        pos = state.context[:, -1, :, 0, 0]
        goal = torch.tensor(self.instruction_goals.get(instruction, self.goal.tolist()))
        direction = (goal - pos) / (goal - pos).norm(dim=-1, keepdim=True).clamp_min(1e-6)
        actions = 0.8 * direction[:, None, None] + self.propose_noise * torch.randn(
            B, n, self.horizon, 2, generator=generator)
        actions = actions.clamp(-1, 1)
        latents = self.rollout(state.repeat(n), actions.reshape(B * n, self.horizon, 2), generator=generator)
        if self.lying_proposals:
            latents = self.goal.reshape(1, 1, 2, 1, 1).expand_as(latents).clone()
        return actions, latents.reshape(B, n, *latents.shape[1:])

    def inverse(self, state: LatentState, future: Tensor, *, generator=None) -> Tensor:
        pos = torch.cat([state.context[:, -1:], future], 1)[:, :, :, 0, 0]
        step = (pos[:, 1:] - pos[:, :-1]) / (self.dt * self.frame_stride)
        return step.repeat_interleave(self.frame_stride, dim=1)

    def score(self, state: LatentState, future: Tensor, instruction) -> tuple[Tensor, Tensor]:
        self.calls["score"] += 1
        d = (future[:, -1, :, 0, 0] - self.goal).norm(dim=-1)
        return torch.exp(-5 * d), 1 - d

    def decode(self, latents: Tensor) -> Tensor:
        pos = latents[..., 0, 0]  # (..., 2)
        return torch.as_tensor(np.stack([render(p) for p in pos.reshape(-1, 2).tolist()])).reshape(
            *pos.shape[:-1], 8, 8, 3)

    def final_distance(self, actions, start=(0.0, 0.0)) -> float:
        """Exact distance to the goal after executing `actions` (H, A) from `start`."""
        start = self.encode(render(start)[None]).context[0, -1, :, 0, 0]  # as the planner sees it
        end = start + self.dt * torch.as_tensor(np.asarray(actions)).sum(0)
        return float((end - self.goal).norm())
