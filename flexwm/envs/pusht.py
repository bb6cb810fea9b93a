"""PushT environment (gym-pusht, pymunk 2-D physics): push a T-shaped block onto a fixed green target pose.

Actions are absolute target positions of the round pusher, 2-d in [0, 512] pixels (the env's PD controller
moves the pusher towards them). Images are drawn by the env itself at the requested size (it draws at 512x512
and resizes). Success is the env's own: more than 95% of the target area covered by the block.

As for Meta-World, an episode does not end on success by default (`terminate_on_success=False`), so every
episode has its full length and per-step success flags are recorded.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from flexwm.envs.base import Observation, RobotEnv, StepResult, check_image_size
from flexwm.errors import EnvError

STATE_DIM = 10  # agent xy, block xy, block angle in [0, 2 pi), goal xy, goal angle, agent velocity xy


def _make_gym_env(obs_type: str, height: int, width: int):
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from gym_pusht.envs.pusht import PushTEnv as _GymPushT

    return _GymPushT(obs_type=obs_type, render_mode="rgb_array", observation_width=width,
                     observation_height=height)


class PushTEnv(RobotEnv):
    """The PushT task at one image size."""

    embodiment = "pusht"
    task = "pusht"

    def __init__(self, image_size: tuple[int, int] = (64, 64), max_episode_steps: int = 300,
                 terminate_on_success: bool = False) -> None:
        if int(max_episode_steps) < 1:
            raise EnvError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.image_size = check_image_size(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        h, w = self.image_size
        self._env = _make_gym_env("pixels_agent_pos", h, w)
        self.action_space = self._env.action_space
        self.fps = int(self._env.metadata["render_fps"])  # 10 Hz control
        self.proprio_dim = 2
        self._image: np.ndarray | None = None
        self._t = 0
        self._done = False
        self.last_coverage = 0.0

    def reset(self, seed: int) -> Observation:
        seed = int(seed)
        if seed < 0:
            raise EnvError(f"reset seed must be >= 0, got {seed}")
        obs, _ = self._env.reset(seed=seed)
        self._image = np.ascontiguousarray(obs["pixels"], dtype=np.uint8)
        self._t = 0
        self._done = False
        self.last_coverage = float(self._env._get_coverage())
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        if self._image is None:
            raise EnvError("pusht: call reset(seed) before step()")
        if self._done:
            raise EnvError("pusht: the episode is over (done was returned); call reset(seed) first")
        a = self.check_action(action)
        obs, reward, _terminated, _truncated, info = self._env.step(a.astype(np.float64))
        self._image = np.ascontiguousarray(obs["pixels"], dtype=np.uint8)
        self._t += 1
        success = bool(info["is_success"])
        self.last_coverage = float(info["coverage"])
        self._done = self._t >= self.max_episode_steps or (self.terminate_on_success and success)
        return StepResult(observation=self._observation(), success=success, done=self._done,
                          reward=float(reward), info={"coverage": self.last_coverage})

    def privileged_state(self) -> np.ndarray:
        if self._image is None:
            raise EnvError("pusht: call reset(seed) before privileged_state()")
        return pusht_state(self._env)

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    @property
    def sim(self):
        """The underlying gym-pusht environment (for experts and tests; do not step it directly)."""
        return self._env

    def _observation(self) -> Observation:
        assert self._image is not None
        agent = np.asarray(self._env.agent.position, dtype=np.float32)
        return Observation(image=self._image.copy(), proprio=agent, instruction=self.instruction)


def pusht_state(env) -> np.ndarray:
    """The full state of a gym-pusht env, float32 (10,): [agent xy, block xy, block angle in [0, 2 pi),
    goal xy, goal angle, agent velocity xy]. The first 5 are gym-pusht's own "state" observation. The block has
    no velocity to record: the space is fully damped, so it moves only while it is pushed."""
    agent = np.asarray(env.agent.position, dtype=np.float64)
    block = np.asarray(env.block.position, dtype=np.float64)
    angle = float(env.block.angle) % (2 * np.pi)
    goal = np.asarray(env.goal_pose, dtype=np.float64)
    vel = np.asarray(env.agent.velocity, dtype=np.float64)
    return np.concatenate([agent, block, [angle], goal, vel]).astype(np.float32)
