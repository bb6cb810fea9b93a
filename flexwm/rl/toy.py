"""A toy simulator and its exact world model, for testing RL and policy evaluation end to end.

`LineEnv`: a point on a line; action[0] in [-1, 1] moves it right by gain * (action[0] + 1) (never left),
success when it passes `goal`. The frame is flat grey with level 127 + 100 x, so x can be read off the image.
`LineWorldModel` implements the `WorldModel` protocol with the same dynamics in a (1, 1, 1) latent and a
success head sigmoid(sharpness * (x - goal)), so imagined == real by construction (up to float rounding):
whatever a policy evaluation or RL run reports beyond that is the plumbing's doing.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from flexwm.envs.base import Observation, RobotEnv, ScriptedPolicy, StepResult
from flexwm.errors import ConfigError
from flexwm.models.interface import LatentState


def _grey(x: np.ndarray | float) -> np.ndarray:
    return np.clip(np.round(127.0 + 100.0 * np.asarray(x, np.float64)), 0, 255).astype(np.uint8)


class LineExpert(ScriptedPolicy):
    """Full speed until past the goal (reads the privileged state [x, goal]), then stop."""

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        a = np.zeros(4, np.float32)
        a[0] = 1.0 if state[0] <= state[1] else -1.0
        return a


class LineEnv(RobotEnv):
    embodiment, task = "line", "reach"

    def __init__(self, image_size: tuple[int, int] = (64, 64), max_episode_steps: int = 20, gain: float = 0.05,
                 goal: float = 0.5, action_dim: int = 4, proprio_dim: int = 4):
        self.image_size, self.max_episode_steps, self.fps = tuple(image_size), int(max_episode_steps), 10
        self.gain, self.goal, self.proprio_dim = float(gain), float(goal), int(proprio_dim)
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.x, self.t = 0.0, 0

    @property
    def instruction(self) -> str:
        return "reach the goal"

    def _obs(self) -> Observation:
        img = np.full((*self.image_size, 3), _grey(self.x), np.uint8)
        proprio = np.zeros(self.proprio_dim, np.float32)
        proprio[0] = self.x
        return Observation(image=img, proprio=proprio, instruction=self.instruction)

    def reset(self, seed: int) -> Observation:
        self.x, self.t = round(float(np.random.default_rng(seed).uniform(-0.5, 0.0)), 2), 0  # exact on the image
        return self._obs()

    def step(self, action: np.ndarray) -> StepResult:
        a = self.check_action(action)
        self.x += self.gain * (float(a[0]) + 1.0)
        self.t += 1
        return StepResult(self._obs(), success=self.x > self.goal, done=self.t >= self.max_episode_steps)

    def privileged_state(self) -> np.ndarray:
        return np.array([self.x, self.goal], np.float32)

    def expert(self) -> ScriptedPolicy:
        return LineExpert()


class LineWorldModel:
    """The exact world model of `LineEnv` (same gain and goal); no video mode, no noise to steer."""

    context_frames, latent_shape, capabilities = 1, (1, 1, 1), frozenset()

    def __init__(self, gain: float = 0.05, goal: float = 0.5, *, action_dim: int = 4, horizon: int = 4,
                 frame_stride: int = 2, image_size: tuple[int, int] = (64, 64), sharpness: float = 50.0):
        self.embodiment, self.action_dim, self.horizon, self.frame_stride = "line", action_dim, horizon, frame_stride
        self.gain, self.goal, self.image_size, self.sharpness = gain, goal, tuple(image_size), sharpness

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(self.action_dim, np.float32), np.ones(self.action_dim, np.float32)

    def knows_instruction(self, instruction: str) -> bool | None:
        return None

    def encode(self, frames, proprio=None) -> LatentState:
        f = torch.as_tensor(np.asarray(frames))
        f = f[:, -1] if f.dim() == 5 else f
        x = (f.double().mean(dim=(1, 2, 3)) - 127.0) / 100.0
        return LatentState(context=x.reshape(-1, 1, 1, 1, 1), proprio=None, embodiment=self.embodiment)

    def rollout(self, state: LatentState, actions: Tensor, *, generator=None, noise=None, steps=None) -> Tensor:
        moves = self.gain * (actions[..., 0].double().clamp(-1, 1) + 1.0)  # (B, T)
        x = state.context[:, -1, 0, 0, 0, None] + moves.cumsum(1)
        return x[:, self.frame_stride - 1:: self.frame_stride, None, None, None]

    def score(self, state: LatentState, future: Tensor, instruction: str | None) -> tuple[Tensor, Tensor]:
        x = future[:, -1, 0, 0, 0]
        return torch.sigmoid(self.sharpness * (x - self.goal)), ((x + 0.5) / (self.goal + 0.5)).clamp(0, 1)

    def decode(self, latents: Tensor) -> Tensor:
        grey = torch.from_numpy(_grey(latents[..., 0, 0, 0].cpu().numpy()))
        return grey[..., None, None, None].expand(*grey.shape, *self.image_size, 3).contiguous()

    def propose(self, state: LatentState, instruction, n: int, *, generator=None, noise=None,
                steps=None) -> tuple[Tensor, Tensor]:
        """The expert's chunk (full speed right) and where it leads."""
        if noise is not None:
            raise ConfigError("LineWorldModel proposes the expert's chunk; it takes no noise")
        B = state.batch_size
        actions = torch.zeros(B * n, self.horizon, self.action_dim, dtype=torch.float64)
        actions[..., 0] = 1.0
        video = self.rollout(state.repeat(n), actions)
        return actions.reshape(B, n, self.horizon, -1), video.reshape(B, n, *video.shape[1:])

    def sample_video(self, state: LatentState, instruction, n: int, *, generator=None, noise=None,
                     steps=None) -> Tensor:
        raise ConfigError("LineWorldModel has no video mode; use propose")

    def inverse(self, state: LatentState, future: Tensor, *, generator=None, steps=None) -> Tensor:
        dx = torch.diff(torch.cat([state.context[:, -1:], future], 1)[:, :, 0, 0, 0], dim=1)  # (B, F)
        a0 = (dx / (self.gain * self.frame_stride) - 1.0).repeat_interleave(self.frame_stride, 1)
        return torch.nn.functional.pad(a0[..., None], (0, self.action_dim - 1))
