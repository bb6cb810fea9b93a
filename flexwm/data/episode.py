"""The in-memory record of one episode: what collection produces and what the dataset writer stores.

Convention (as in LeRobot): row t holds the observation at time t and the action taken at time t, and
`success[t]` is the simulator's success flag *after* that action. The observation after the last action is
not stored, so a model learns transitions (frame t, action t) -> frame t+1 for t < T-1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Outcome = Literal["success", "failure", "play", "unlabelled"]
# unlabelled: an episode of a dataset flexwm did not write, whose outcome nobody declared (flexwm/data/plain.py)
OUTCOMES: tuple[str, ...] = ("success", "failure", "play", "unlabelled")
SOURCES: tuple[str, ...] = ("expert", "noisy", "play", "random", "external")


@dataclass
class EpisodeMeta:
    embodiment: str
    task: str  # simulator task name, e.g. "door-open-v3"
    instruction: str  # natural-language instruction given to the agent ("" for task-free play)
    outcome: str  # success | failure | play | unlabelled
    source: str  # expert | noisy | play | random | external (a dataset flexwm did not write)
    noise: float  # action-noise std of the data source (0 for the clean expert)
    seed: int  # the environment reset seed: the episode can be reproduced from it
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")


@dataclass
class Episode:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    proprio: np.ndarray  # float32 (T, P)
    actions: np.ndarray  # float32 (T, A), native action units
    success: np.ndarray  # bool (T,), per-step success flag after the action
    state: np.ndarray  # float32 (T, S), privileged simulator state (analysis only)
    meta: EpisodeMeta
    fps: int = 10

    def __post_init__(self) -> None:
        T = len(self.actions)
        for name in ("frames", "proprio", "success", "state"):
            n = len(getattr(self, name))
            if n != T:
                raise ValueError(f"episode field {name!r} has {n} steps but actions has {T}; all must match")
        if T == 0:
            raise ValueError("an episode needs at least one step")
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}")

    @property
    def length(self) -> int:
        return len(self.actions)
