"""A toy WorldModel with known optima, for planner tests: a 2-D point mass. It is not a network: it implements
the `flexwm.models.interface.WorldModel` protocol by hand, so whatever works with it works through that
interface alone.

Frames are 8x8 images whose red / green levels encode the position (x, y) in [-1, 1]; the latent of a frame
is its position, shaped (2, 1, 1) (the "tokenizer" reads two colour levels). rollout = cumulative sum of
dt * actions (linear dynamics); score = closeness of the final imagined position to the goal; propose = noisy
actions toward the goal; sample_video = where such actions lead; inverse = position differences.
`capabilities` (default none) switches on video mode and noise steering. `PointMassEnv` is the same point mass
as a simulator (a RobotEnv), for evaluating policies against the model.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from flexwm.envs.base import Observation, RobotEnv, ScriptedPolicy, StepResult
from flexwm.errors import ConfigError
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
    latent_shape = (2, 1, 1)
    image_size = (8, 8)

    def __init__(self, goal=(0.6, -0.6), dt: float = 0.1, propose_noise: float = 0.5, rollout_noise: float = 0.0,
                 lying_proposals: bool = False, instruction_goals: dict | None = None, capabilities=(),
                 known_instructions=None):
        self.goal = torch.tensor(goal, dtype=torch.float32)
        self.instruction_goals = instruction_goals or {}  # propose heads here for these instructions
        self.dt, self.propose_noise, self.rollout_noise = dt, propose_noise, rollout_noise
        self.lying_proposals = lying_proposals  # propose claims to reach the goal whatever its actions do
        self.calls = {"rollout": 0, "propose": 0, "score": 0}
        self.capabilities = frozenset(capabilities)  # of "video", "noise"
        self.known_instructions = known_instructions  # None: cannot tell
        self.steps_seen: list = []  # the `steps` argument of every sampling call

    def action_bounds(self):
        return -np.ones(2, np.float32), np.ones(2, np.float32)

    def knows_instruction(self, instruction: str):
        return None if self.known_instructions is None else instruction in self.known_instructions

    def encode(self, frames, proprio=None) -> LatentState:
        f = torch.as_tensor(np.asarray(frames))
        if f.dim() == 4:
            f = f[:, None]
        pos = f[..., :2].float().mean(dim=(2, 3)) / 127.5 - 1  # (B, T, 2)
        return LatentState(context=pos[:, -self.context_frames:, :, None, None], proprio=None, embodiment="toy")

    def rollout(self, state: LatentState, actions: Tensor, *, generator=None, noise=None, steps=None) -> Tensor:
        self.calls["rollout"] += 1
        self.steps_seen.append(steps)
        path = state.context[:, -1, :, 0, 0][:, None] + self.dt * actions.cumsum(1)
        if self.rollout_noise:
            path = path + self.rollout_noise * torch.randn(path.shape, generator=generator)
        return path[:, self.frame_stride - 1::self.frame_stride, :, None, None]

    def propose(self, state: LatentState, instruction, n: int, *, generator=None, noise=None,
                steps=None) -> tuple[Tensor, Tensor]:
        """Actions toward the (instruction's) goal plus propose_noise x the action noise (drawn, or given as
        noise["actions"] (B, n, H, 2)); the video noise is not used (the toy's futures are deterministic)."""
        if noise is not None and "noise" not in self.capabilities:
            raise ConfigError("this PointMass takes no initial noise")
        self.calls["propose"] += 1
        B = state.batch_size
        pos = state.context[:, -1, :, 0, 0]
        goal = torch.tensor(self.instruction_goals.get(instruction, self.goal.tolist()))
        direction = (goal - pos) / (goal - pos).norm(dim=-1, keepdim=True).clamp_min(1e-6)
        eps = (noise or {}).get("actions")
        if eps is None:
            eps = torch.randn(B, n, self.horizon, 2, generator=generator)
        actions = 0.8 * direction[:, None, None] + self.propose_noise * eps.to(pos)
        actions = actions.clamp(-1, 1)
        latents = self.rollout(state.repeat(n), actions.reshape(B * n, self.horizon, 2), generator=generator,
                               steps=steps)
        if self.lying_proposals:
            latents = self.goal.reshape(1, 1, 2, 1, 1).expand_as(latents).clone()
        return actions, latents.reshape(B, n, *latents.shape[1:])

    def sample_video(self, state: LatentState, instruction, n: int, *, generator=None, noise=None,
                     steps=None) -> Tensor:
        """Video mode: where n proposals lead, (B, n, F, 2, 1, 1); `noise` shifts the frames."""
        if "video" not in self.capabilities or (noise is not None and "noise" not in self.capabilities):
            raise ConfigError("this PointMass has no video mode")
        video = self.propose(state, instruction, n, generator=generator, steps=steps)[1]
        return video if noise is None else video + 0.01 * noise.to(video)

    def inverse(self, state: LatentState, future: Tensor, *, generator=None, steps=None) -> Tensor:
        self.steps_seen.append(steps)
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


class PointMassExpert(ScriptedPolicy):
    """Straight at the goal (read from the privileged state [x, y, goal_x, goal_y]) at full speed."""

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        d = state[2:] - state[:2]
        return (d / max(float(np.linalg.norm(d)), 1e-6)).astype(np.float32)


class PointMassEnv(RobotEnv):
    """The point mass as a simulator: the same dynamics as `PointMass` (dt x action per step), starting at a
    seeded random position; success within `radius` of the goal (default: where PointMass.score's P(success)
    exp(-5 d) crosses 0.5)."""

    embodiment, task, fps, proprio_dim = "toy", "reach", 10, 2
    image_size = (8, 8)

    def __init__(self, goal=(0.6, -0.6), dt: float = 0.1, radius: float = float(np.log(2) / 5),
                 max_episode_steps: int = 12):
        self.goal, self.dt, self.radius = np.asarray(goal, np.float64), float(dt), float(radius)
        self.max_episode_steps = int(max_episode_steps)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.pos, self.t = np.zeros(2), 0

    @property
    def instruction(self) -> str:
        return "reach the goal"

    def _obs(self) -> Observation:
        return observation(self.pos, self.instruction)

    def reset(self, seed: int) -> Observation:
        # positions the 8x8 frame encodes exactly (multiples of 1 / 127.5), so the model sees where it is
        u = np.random.default_rng(seed).uniform(-0.6, 0.2, 2)
        self.pos = np.round((u + 1) * 127.5) / 127.5 - 1
        self.t = 0
        return self._obs()

    def step(self, action: np.ndarray) -> StepResult:
        self.pos = self.pos + self.dt * self.check_action(action).astype(np.float64)
        self.t += 1
        success = bool(np.linalg.norm(self.pos - self.goal) < self.radius)
        return StepResult(self._obs(), success=success, done=success or self.t >= self.max_episode_steps)

    def privileged_state(self) -> np.ndarray:
        return np.concatenate([self.pos, self.goal]).astype(np.float32)

    def expert(self) -> ScriptedPolicy:
        return PointMassExpert()
