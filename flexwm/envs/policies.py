"""Data-collection policies: scripted experts, noisy experts, task-free autonomous play and random actions.

All of them implement `ScriptedPolicy` (reset(seed), act(obs, state)) and read the privileged simulator state
where they need object poses. Every policy is deterministic given its constructor seed and `reset(seed)`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from gymnasium import spaces

from flexwm.envs.base import Observation, ScriptedPolicy
from flexwm.envs.pusht_expert import PushTExpert, _Visibility, t_polygon
from flexwm.errors import EnvError

__all__ = ["MetaWorldExpert", "PushTExpert", "NoisyPolicy", "PlayPolicy", "BabblingPolicy", "RandomPolicy"]


class MetaWorldExpert(ScriptedPolicy):
    """Meta-World's own scripted policy for a task (it reads the 39-d observation = the privileged state)."""

    def __init__(self, task: str) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            from flexwm.envs.metaworld import _check_task

            _check_task(task)  # raises with the list of valid names
            raise EnvError(f"Meta-World has no scripted policy for {task!r}")
        self.task = task
        self._policy = ENV_POLICY_MAP[task]()

    def reset(self, seed: int) -> None:  # the scripted policies are stateless
        pass

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, as the policy expects
            warnings.simplefilter("ignore", UserWarning)
            a = self._policy.get_action(np.asarray(state, dtype=np.float64))
        return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)


class NoisyPolicy(ScriptedPolicy):
    """`base` plus Gaussian action noise, clipped to the action space.

    The noise std per dimension is ``noise * (high - low) / 2``. With ``correlation`` rho > 0 the noise is an
    AR(1) process (n_t = rho n_{t-1} + sqrt(1 - rho^2) e_t), so it drifts smoothly but keeps the same std.
    """

    def __init__(self, base: ScriptedPolicy, noise: float, action_space: spaces.Box, seed: int = 0,
                 correlation: float = 0.0) -> None:
        if not noise >= 0.0:
            raise EnvError(f"noise must be >= 0, got {noise}")
        if not 0.0 <= correlation < 1.0:
            raise EnvError(f"noise correlation must be in [0, 1), got {correlation}")
        self.base, self.noise, self.action_space = base, float(noise), action_space
        self.seed, self.correlation = int(seed), float(correlation)
        self._std = self.noise * (action_space.high - action_space.low).astype(np.float64) / 2.0
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.base.reset(seed)
        self._rng = np.random.default_rng([self.seed, int(seed), 1])
        self._n = np.zeros(self.action_space.shape)

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        a = np.asarray(self.base.act(obs, state), dtype=np.float64)
        e = self._rng.standard_normal(self._n.shape)
        rho = self.correlation
        self._n = rho * self._n + math.sqrt(1.0 - rho * rho) * e
        a = a + self._std * self._n
        return np.clip(a, self.action_space.low, self.action_space.high).astype(np.float32)


class PlayPolicy(ScriptedPolicy):
    """Task-free play by goal babbling: reach for random targets, mostly at or around the objects.

    Sawyer (Meta-World): targets are drawn near the first or second object (observation dims 4:7 and 11:14)
    with probability `p_object`, else anywhere in the hand's workspace; some object visits are grasp attempts
    (approach from above with the gripper open, close it, carry the object to a random place, let go). Motion is
    low-pass filtered so it looks like smooth, purposeful movement.
    PushT: pushes (go to a random side of the block, then through it) with probability `p_object`, else random
    points in the arena; the commanded pusher position moves smoothly towards the target.
    """

    # hand workspace used for random targets (Meta-World's mocap range is a bit larger)
    SAWYER_LOW = np.array([-0.3, 0.4, 0.05])
    SAWYER_HIGH = np.array([0.3, 0.9, 0.3])

    def __init__(self, embodiment: str, action_space: spaces.Box, seed: int = 0, p_object: float = 0.8,
                 smoothing: float = 0.6) -> None:
        if embodiment not in ("sawyer", "pusht"):
            raise EnvError(f"PlayPolicy supports embodiments 'sawyer' and 'pusht', got {embodiment!r}")
        self.embodiment, self.action_space, self.seed = embodiment, action_space, int(seed)
        self.p_object, self.smoothing = float(p_object), float(smoothing)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([self.seed, int(seed), 2])
        self._queue: list[tuple[np.ndarray, float, int, bool]] = []  # (target, gripper, max steps, dwell)
        self._steps = 0
        self._prev: np.ndarray | None = None
        self._vel = np.zeros(2)

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if self.embodiment == "sawyer":
            return self._act_sawyer(state)
        return self._act_pusht(state)

    # ---- Meta-World -------------------------------------------------------------------------------------

    def _sawyer_objects(self, state: np.ndarray) -> list[np.ndarray]:
        objs = [state[4:7], state[11:14]]
        return [o for o in objs if np.any(np.abs(o) > 1e-6)]  # unused object slots are zero

    def _plan_sawyer(self, state: np.ndarray) -> None:
        rng = self._rng
        objs = self._sawyer_objects(state)
        if objs and rng.random() < self.p_object:
            obj = objs[int(rng.integers(len(objs)))]
            if rng.random() < 0.5:  # grasp attempt: above, down (open), close, carry, release
                above = obj + np.array([0, 0, 0.1])
                at = obj + rng.normal(0, 0.01, 3)
                away = rng.uniform(self.SAWYER_LOW, self.SAWYER_HIGH)
                self._queue = [(above, -1.0, 30, False), (at, -1.0, 25, False), (at, 1.0, 10, True),
                               (away, 1.0, 40, False), (away, -1.0, 5, True)]
            else:  # touch / push: go to (or through) a point next to the object
                offset = rng.normal(0, 0.04, 3)
                offset[2] = abs(offset[2]) * 0.5
                self._queue = [(obj + offset, float(rng.choice([-1.0, 1.0])), 40, False)]
        else:
            target = rng.uniform(self.SAWYER_LOW, self.SAWYER_HIGH)
            self._queue = [(target, float(rng.choice([-1.0, 1.0])), 40, False)]

    def _act_sawyer(self, state: np.ndarray) -> np.ndarray:
        hand = state[0:3]
        if self._queue:
            target, _, max_steps, dwell = self._queue[0]
            self._steps += 1
            if (not dwell and np.linalg.norm(target - hand) < 0.02) or self._steps > max_steps:
                self._queue.pop(0)
                self._steps = 0
        if not self._queue:
            self._plan_sawyer(state)
            self._steps = 0
        target, grip, _, _ = self._queue[0]
        if self._rng.random() < 0.03:  # occasional spontaneous gripper toggles
            grip = -grip
        move = np.clip(10.0 * (target - hand), -1.0, 1.0)
        raw = np.concatenate([move, [grip]])
        a = raw if self._prev is None else self.smoothing * self._prev + (1 - self.smoothing) * raw
        a[3] = grip  # the gripper command is not smoothed: open/close decisively
        self._prev = a
        return np.clip(a, self.action_space.low, self.action_space.high).astype(np.float32)

    # ---- PushT -------------------------------------------------------------------------------------------

    def _plan_pusht(self, state: np.ndarray) -> None:
        from shapely.geometry import Polygon

        rng = self._rng
        agent, block = state[0:2], state[2:4]
        paths = _Visibility(Polygon(t_polygon(block, float(state[4]))), agent)  # around the T, not through it
        lo, hi = 40.0, 472.0  # keep the pusher off the walls: a block pinned against one can tunnel through it
        if rng.random() < self.p_object:
            # a push: go round to one side of the block, then through it. Near a wall, pushes head back towards
            # the centre, so the block neither gets stuck there nor squeezed out of the arena.
            to_centre = np.array([256.0, 256.0]) - block
            near_wall = min(block.min(), 512.0 - block.max()) < 130.0
            for _ in range(10):
                if rng.random() < (1.0 if near_wall else 0.2):
                    phi = math.atan2(to_centre[1], to_centre[0]) + rng.uniform(-1.0, 1.0)
                else:
                    phi = rng.uniform(-math.pi, math.pi)
                d = np.array([math.cos(phi), math.sin(phi)])
                side = block - d * rng.uniform(70, 110) + rng.normal(0, 15, 2)
                if not np.all((side >= lo) & (side <= hi)):
                    continue  # the block is between the wall and this side: try another direction
                path = paths.path_to(side)
                if path is None or any(np.any((w < lo - 15) | (w > hi + 15)) for w in path):
                    continue
                through = np.clip(block + d * rng.uniform(0, 80), lo, hi)
                self._queue = [(w, 0.0, 15, False) for w in path] + [(through, 0.0, 15, False)]
                return
        target = rng.uniform(lo, hi, 2)  # a move elsewhere (also when no push was found)
        path = paths.path_to(target) or [target]
        self._queue = [(np.clip(w, lo, hi), 0.0, 15, False) for w in path]

    def _act_pusht(self, state: np.ndarray) -> np.ndarray:
        agent = state[0:2]
        if self._queue:
            self._steps += 1
            if np.linalg.norm(self._queue[0][0] - agent) < 10 or self._steps > self._queue[0][2]:
                self._queue.pop(0)
                self._steps = 0
        if not self._queue:
            self._plan_pusht(state)
            self._steps = 0
        target = self._queue[0][0]
        prev = agent if self._prev is None else self._prev
        step = target - prev
        dist = float(np.linalg.norm(step))
        if dist > 25.0:  # the commanded point moves at most 25 px per step...
            step = step * 25.0 / dist
        self._vel = self.smoothing * self._vel + (1 - self.smoothing) * step  # ...and changes direction smoothly
        cmd = prev + self._vel
        self._prev = np.clip(cmd, self.action_space.low, self.action_space.high)
        return self._prev.astype(np.float32)


class BabblingPolicy(ScriptedPolicy):
    """Task-free play for any embodiment (motor babbling): the action glides towards a random target in the
    action space, which is redrawn every `hold_low`..`hold_high` steps, so motion is smooth and covers the whole
    action range. Needs no state; used for embodiments without a scripted play policy (e.g. gymnasium envs)."""

    def __init__(self, action_space: spaces.Box, seed: int = 0, smoothing: float = 0.7, hold_low: int = 5,
                 hold_high: int = 20) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise EnvError(f"smoothing must be in [0, 1), got {smoothing}")
        if not 1 <= hold_low <= hold_high:
            raise EnvError(f"need 1 <= hold_low <= hold_high, got {hold_low}, {hold_high}")
        self.action_space, self.seed, self.smoothing = action_space, int(seed), float(smoothing)
        self.hold = (int(hold_low), int(hold_high))
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([self.seed, int(seed), 3])
        self._left = 0
        self._target = self._a = None

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        low, high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        if self._left <= 0:
            self._target = self._rng.uniform(low, high)
            self._left = int(self._rng.integers(self.hold[0], self.hold[1] + 1))
        self._left -= 1
        prev = (low + high) / 2.0 if self._a is None else self._a  # start from the middle of the range
        self._a = self.smoothing * prev + (1.0 - self.smoothing) * self._target
        return np.clip(self._a, low, high).astype(np.float32)


class RandomPolicy(ScriptedPolicy):
    """Independent uniformly random actions in the action space."""

    def __init__(self, action_space: spaces.Box, seed: int = 0) -> None:
        self.action_space, self.seed = action_space, int(seed)
        self.reset(0)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng([self.seed, int(seed), 4])

    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray:
        low, high = self.action_space.low.astype(np.float64), self.action_space.high.astype(np.float64)
        return self._rng.uniform(low, high).astype(np.float32)
