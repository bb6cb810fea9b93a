"""What every way to act shares: the Plan record, the planner interface, frame history, receding horizon.

A *planner* turns what the robot has seen (the last frames, proprio, instruction) into a `Plan` of H actions.
A *policy* (`RecedingHorizonPolicy`) wraps a planner for the simulator loop: `act(observation)` returns one
action, executing the first `execute` actions of a plan before planning again, and keeps the frame history so
the model gets `context_frames` frames spaced `frame_stride` steps apart (the first frame of the episode
repeated before the start, exactly as training windows are built).

    policy = make_policy("cem", wm, action_space=env.action_space)
    policy.reset(seed=0)
    action = policy.act(obs)          # np.ndarray (A,), native units
    policy.last_plan                  # Plan: actions (H, A), imagined latents, score, seconds
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.envs.base import Observation
from flexwm.errors import ConfigError
from flexwm.models.interface import LatentState, WorldModel


@dataclass
class Plan:
    """One planning result: what the policy intends to do and what it imagines will happen."""

    actions: np.ndarray  # (H, A) native units
    latents: Tensor | None = None  # (F', c, h, w) imagined frame latents on CPU (frame k after (k+1)*stride actions)
    score: float | None = None  # objective value of the plan (higher is better), if the planner scores
    seconds: float = 0.0  # wall time of planning (synchronised on CUDA)
    instruction: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Planner:
    """Base class: `plan(frames, proprio, instruction, generator, executed) -> Plan`.

    `frames` (C, H, W, 3) uint8, oldest first, `frame_stride` steps apart; `executed` is the number of actions
    of the previous plan that were executed since it was made (for warm starts). Subclasses set `horizon`
    (actions per plan), `action_dim`, `context_frames`, `frame_stride` and implement `_plan`.
    """

    name: str = "planner"
    horizon: int
    action_dim: int
    context_frames: int = 1
    frame_stride: int = 1
    wm: Any = None  # the world model, if the planner uses one (for decoding imagined frames)

    def reset(self) -> None:
        """Forget the warm start (called at the start of every episode)."""

    def plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
             generator: torch.Generator, executed: int = 0) -> Plan:
        start = time.perf_counter()
        plan = self._plan(frames, proprio, instruction, generator, executed)
        _synchronize()
        plan.seconds = time.perf_counter() - start
        plan.instruction = instruction
        return plan

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        raise NotImplementedError


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class FrameHistory:
    """The frames (and proprio) a policy needs: C frames spaced `stride` steps apart, ending now.

    Before the episode has `(C-1)*stride` steps, the first frame stands in for the missing ones (as training
    windows clip indices to frame 0); until then the deque still holds every frame, the first included.
    """

    def __init__(self, context_frames: int, frame_stride: int):
        self.C, self.stride = int(context_frames), int(frame_stride)
        self._frames: deque[np.ndarray] = deque(maxlen=(self.C - 1) * self.stride + 1)
        self.proprio: np.ndarray | None = None
        self.instruction = ""
        self.t = -1  # index of the newest frame

    def clear(self) -> None:
        self._frames.clear()
        self.proprio, self.instruction, self.t = None, "", -1

    def copy(self) -> FrameHistory:
        new = FrameHistory(self.C, self.stride)
        new._frames.extend(self._frames)
        new.proprio, new.instruction, new.t = self.proprio, self.instruction, self.t
        return new

    def push(self, obs: Observation) -> None:
        image = np.asarray(obs.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ConfigError(f"observation image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if self._frames and image.shape != self._frames[-1].shape:
            raise ConfigError(f"observation image changed shape from {self._frames[-1].shape} to {image.shape} "
                              "within an episode; call policy.reset(seed) between episodes")
        self._frames.append(image)
        self.proprio = None if obs.proprio is None else np.asarray(obs.proprio, dtype=np.float32)
        self.instruction = obs.instruction
        self.t += 1

    def frames(self) -> np.ndarray:
        """(C, H, W, 3) uint8, oldest first."""
        if not self._frames:
            raise ConfigError("the frame history is empty; push an observation first")
        oldest_kept = self.t - len(self._frames) + 1
        out = []
        for j in range(self.C - 1, -1, -1):
            idx = max(self.t - j * self.stride, 0)
            out.append(self._frames[idx - oldest_kept])
        return np.stack(out)


class RecedingHorizonPolicy:
    """plan H actions, execute the first `execute`, replan. The interface evaluation and RL use.

    `ensemble` (a number k >= 0) turns on temporal ensembling (ACT, Zhao et al. 2023): a plan is made at every
    step, and the action executed is the mean of what every plan still covering this step predicts for it,
    weighted exp(-k * i) with i = 0 for the oldest plan (k = 0: plain mean). `execute` must then be 1 (or None).
    """

    def __init__(self, planner: Planner, *, execute: int | None = None, action_low: Any = None,
                 action_high: Any = None, name: str | None = None, ensemble: float | None = None):
        self.planner = planner
        self.name = name or planner.name
        if ensemble is not None:
            if not float(ensemble) >= 0:
                raise ConfigError(f"ensemble = {ensemble!r} must be a number >= 0 (the weight decay of older plans)")
            if execute not in (None, 1):
                raise ConfigError(f"temporal ensembling plans at every step: execute must be 1, got {execute}; "
                                  "drop execute= or drop ensemble=")
            execute = 1
        self.ensemble = None if ensemble is None else float(ensemble)
        self.execute = int(execute) if execute is not None else min(planner.frame_stride, planner.horizon)
        if not 1 <= self.execute <= planner.horizon:
            raise ConfigError(f"execute = {self.execute} must be between 1 and the plan length {planner.horizon} "
                              f"of planner {self.name!r}")
        self._chunks: list[list[Any]] = []  # temporal ensembling: [actions (H, A), index of the next action]
        A = planner.action_dim
        self.action_low = _bound(action_low, -1.0, A, "action_low")
        self.action_high = _bound(action_high, 1.0, A, "action_high")
        self.history = FrameHistory(planner.context_frames, planner.frame_stride)
        self.generator = torch.Generator().manual_seed(0)
        self._queue: list[np.ndarray] = []
        self._since_plan = 0
        self.last_plan: Plan | None = None
        self.replanned = False  # whether the last act() made a new plan
        self.config: dict[str, Any] = {}  # the resolved planner config (make_policy fills it in)

    @property
    def action_dim(self) -> int:
        return self.planner.action_dim

    @property
    def wm(self) -> Any:
        return self.planner.wm

    def reset(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))
        self.history.clear()
        self.planner.reset()
        self._queue, self._since_plan, self.last_plan, self.replanned = [], 0, None, False
        self._chunks = []

    def plan(self, observation: Observation) -> Plan:
        """A plan from the history plus `observation`, without executing it (uses the policy's generator)."""
        history = self.history.copy()
        history.push(observation)
        return self._plan_now(history, executed=self._since_plan)

    def act(self, observation: Observation) -> np.ndarray:
        self.history.push(observation)
        if self.ensemble is not None:
            return self._act_ensembled()
        self.replanned = not self._queue
        if self.replanned:
            self.last_plan = self._plan_now(self.history, executed=self._since_plan)
            self._queue = list(self.last_plan.actions[: self.execute])
            self._since_plan = 0
        self._since_plan += 1
        return self._queue.pop(0)

    def _act_ensembled(self) -> np.ndarray:
        self.last_plan = self._plan_now(self.history, executed=self._since_plan)
        self.replanned, self._since_plan = True, 1
        self._chunks.append([self.last_plan.actions, 0])
        preds = np.stack([actions[i] for actions, i in self._chunks])  # oldest plan first
        weights = np.exp(-self.ensemble * np.arange(len(preds)))
        action = (weights[:, None] * preds).sum(0) / weights.sum()
        for chunk in self._chunks:
            chunk[1] += 1
        self._chunks = [c for c in self._chunks if c[1] < len(c[0])]
        return np.clip(action, self.action_low, self.action_high).astype(np.float32)

    def _plan_now(self, history: FrameHistory, executed: int) -> Plan:
        plan = self.planner.plan(history.frames(), history.proprio, history.instruction, self.generator, executed)
        actions = np.asarray(plan.actions, dtype=np.float32)
        if actions.shape != (self.planner.horizon, self.action_dim):
            raise RuntimeError(f"planner {self.name!r} returned actions {actions.shape}, expected "
                               f"({self.planner.horizon}, {self.action_dim})")
        plan.actions = np.clip(actions, self.action_low, self.action_high)
        return plan

    def decode(self, latents: Tensor) -> np.ndarray | None:
        """Imagined latents -> uint8 frames (..., H, W, 3), or None without a world model."""
        if self.wm is None or latents is None:
            return None
        with torch.no_grad():
            return np.asarray(torch.as_tensor(self.wm.decode(latents)).cpu())


class WMPlanner(Planner):
    """A planner around a world model: frames -> `LatentState` (no gradients), plan length `chunks` x H."""

    def __init__(self, wm: WorldModel, chunks: int = 1):
        self.wm = wm
        self.action_dim, self.frame_stride = int(wm.action_dim), int(wm.frame_stride)
        self.horizon = int(wm.horizon) * int(chunks)
        self.context_frames = int(wm.context_frames)

    def encode(self, frames: np.ndarray, proprio: np.ndarray | None) -> LatentState:
        with torch.no_grad():
            return self.wm.encode(frames[None], None if proprio is None else proprio[None])


def to_numpy(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def _bound(value: Any, default: float, dim: int, what: str) -> np.ndarray:
    v = np.full(dim, default, np.float32) if value is None else np.asarray(value, np.float32).reshape(-1)
    if v.shape != (dim,):
        raise ConfigError(f"{what} has {v.size} entries but the policy's actions have dim {dim}")
    return v


def check_action_dim(dim: int, expected: int, what: str, expected_by: str, error: type[Exception] = ConfigError
                     ) -> None:
    """Raise `error` naming both sides unless `what` (with `dim`-d actions) fits `expected_by` (`expected`-d)."""
    if int(dim) != int(expected):
        raise error(f"{what} has {int(dim)}-d actions but {expected_by} expects {int(expected)}-d actions; use a "
                    "model trained on this embodiment")


def action_bounds(wm: WorldModel | None = None, action_space: Any = None, action_dim: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Action bounds, float32 (A,) each: the action space if given, else the world model's action range
    (`wm.action_bounds()`), else [-1, 1] of `action_dim`. With `action_dim` the bounds must have that size."""
    if action_space is not None:
        low, high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
    elif wm is not None:
        low, high = (np.asarray(b, np.float32) for b in wm.action_bounds())
    elif action_dim is not None:
        low, high = -np.ones(action_dim, np.float32), np.ones(action_dim, np.float32)
    else:
        raise ConfigError("the policy needs action_space= (or a world model) to know its actions")
    if action_dim is not None:
        check_action_dim(action_dim, low.shape[0], "the policy", "the action space")
    return low, high
