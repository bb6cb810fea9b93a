"""A small gymnasium environment flexwm has no special code for, registered as "ToyReach-v0" when this module is
imported: `gymnasium.make("tests.helpers.toy_gym:ToyReach-v0")`, or `--env gym:tests.helpers.toy_gym:ToyReach-v0`.

A dot in [-1, 1]^2 moves by `speed * action[:2]` (action[2:] is ignored: 4-d actions, like the tiny test models);
success (info["is_success"]) when it is within `goal_radius` of the goal (the episode terminates then with
`terminate=True`). The observation is a Dict with the
camera image ("image", size x size), the dot's position ("agent_pos") and the goal ("goal"); render() draws a
non-square 40 x 56 view of the same scene.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

ENV_ID = "tests.helpers.toy_gym:ToyReach-v0"


class ToyReach(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, render_mode: str | None = None, size: int = 48, speed: float = 0.2, goal_radius: float = 0.2,
                 terminate: bool = False):
        self.render_mode, self.size, self.speed, self.goal_radius = render_mode, int(size), float(speed), goal_radius
        self.terminate = bool(terminate)
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (self.size, self.size, 3), np.uint8),
            "agent_pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "goal": spaces.Box(-1.0, 1.0, (2,), np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.pos = np.zeros(2, np.float32)
        self.goal = np.zeros(2, np.float32)

    def _draw(self, h: int, w: int) -> np.ndarray:
        img = np.full((h, w, 3), 30, np.uint8)
        for p, colour in ((self.goal, (0, 200, 0)), (self.pos, (230, 60, 60))):
            r, c = int((p[1] + 1) / 2 * (h - 1)), int((p[0] + 1) / 2 * (w - 1))
            img[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = colour
        return img

    def _obs(self) -> dict:
        return {"image": self._draw(self.size, self.size), "agent_pos": self.pos.copy(), "goal": self.goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.9, 0.9, 2).astype(np.float32)
        self.goal = self.np_random.uniform(-0.9, 0.9, 2).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self.pos = np.clip(self.pos + self.speed * a[:2], -1.0, 1.0).astype(np.float32)
        distance = float(np.linalg.norm(self.pos - self.goal))
        success = distance < self.goal_radius
        return self._obs(), float(-distance), self.terminate and success, False, {"is_success": success,
                                                                                  "distance": distance}

    def render(self):
        return self._draw(40, 56) if self.render_mode == "rgb_array" else None


if "ToyReach-v0" not in gymnasium.registry:
    gymnasium.register("ToyReach-v0", entry_point=ToyReach, max_episode_steps=30)
