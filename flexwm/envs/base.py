"""The one small interface every embodiment implements.

A `RobotEnv` hides the simulator behind reset(seed) -> Observation and step(action) -> StepResult. The model only
ever sees `Observation` (camera pixels, proprioception, instruction). Object and goal state (the privileged
simulator state) is returned separately by `privileged_state()` so scripted experts can use it and episode
records can keep it for analysis, but it is never part of what the world model is trained on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from flexwm.errors import EnvError


def check_image_size(image_size) -> tuple[int, int]:
    """(height, width) as ints, between 8 and 2048 pixels per side, else an EnvError."""
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise EnvError(f"image_size must be (height, width), got {image_size!r}") from None
    if not (8 <= h <= 2048 and 8 <= w <= 2048):
        raise EnvError(f"image_size must be between 8 and 2048 pixels per side, got {(h, w)}")
    return h, w


@dataclass
class Observation:
    image: np.ndarray  # uint8, (H, W, 3), the right way up
    proprio: np.ndarray  # float32, (P,): robot proprioception only (no object or goal state)
    instruction: str


@dataclass
class StepResult:
    observation: Observation
    success: bool  # the simulator's own success flag after this step
    done: bool  # episode over: success-termination or time limit
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class RobotEnv(ABC):
    """A simulator for one task of one embodiment."""

    embodiment: str  # e.g. "sawyer" (Meta-World) or "pusht"
    task: str  # e.g. "door-open-v3" or "pusht"
    action_space: spaces.Box  # native action space of the simulator
    proprio_dim: int
    image_size: tuple[int, int]  # (H, W)
    max_episode_steps: int
    fps: int

    @abstractmethod
    def reset(self, seed: int) -> Observation: ...

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult: ...

    @abstractmethod
    def privileged_state(self) -> np.ndarray:
        """Full simulator state vector (object and goal poses included), float32. For experts and analysis."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @property
    def instruction(self) -> str:
        from flexwm.envs.instructions import canonical_instruction

        return canonical_instruction(self.task)

    def instructions(self, split: str = "all") -> list[str]:
        """Instructions of this env's task: a paraphrase split ("train", "eval", "all") or "canonical"."""
        from flexwm.envs.instructions import paraphrases

        return [self.instruction] if split == "canonical" else paraphrases(self.task, split)  # type: ignore[arg-type]

    # what to do with a finite action outside the action space: "clip" it (default) or "reject" it
    out_of_range: str = "clip"

    def check_action(self, action: np.ndarray) -> np.ndarray:
        """Validate an action: right shape, finite, and clipped (or rejected, see `out_of_range`) to the action
        space. Errors name the episode step. Returns float32."""
        a = np.asarray(action, dtype=np.float32)
        where = f"{self.embodiment}/{self.task} at step {getattr(self, '_t', '?')} of the episode"
        if a.shape != self.action_space.shape:
            raise EnvError(
                f"{where} expects an action of shape {self.action_space.shape}, "
                f"got {a.shape}; pass one action per step (reshape or slice your action chunk)."
            )
        if not np.all(np.isfinite(a)):
            raise EnvError(
                f"{where} got a non-finite action {a.tolist()}; "
                "check the policy output for NaN/inf before stepping the environment."
            )
        low, high = self.action_space.low, self.action_space.high
        if self.out_of_range == "reject" and (np.any(a < low) or np.any(a > high)):
            raise EnvError(f"{where} got action {a.tolist()} outside the action space [{low.tolist()}, "
                           f"{high.tolist()}]; scale the policy's output, or make the env with out_of_range='clip'")
        return np.clip(a, low, high)


class ScriptedPolicy(ABC):
    """A data-collection policy: scripted expert, noisy expert or task-free play.

    Scripted policies may read the privileged simulator state (experts need object poses); learned policies
    (flexwm.planning) see only the Observation.
    """

    @abstractmethod
    def reset(self, seed: int) -> None: ...

    @abstractmethod
    def act(self, obs: Observation, state: np.ndarray) -> np.ndarray: ...
