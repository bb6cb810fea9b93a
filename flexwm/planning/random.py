"""The floor every way to act must beat: uniform random actions within the action bounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flexwm.config import field
from flexwm.planning.base import Plan, Planner


@dataclass
class RandomConfig:
    execute: int | None = field(1, ge=1, help="actions executed before drawing new ones")
    horizon: int = field(1, ge=1, help="actions drawn per plan")


class RandomPlanner(Planner):
    name = "random"

    def __init__(self, cfg: RandomConfig, low: np.ndarray, high: np.ndarray):
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.horizon, self.action_dim = cfg.horizon, int(self.low.shape[0])

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        u = torch.rand(self.horizon, self.action_dim, generator=generator).numpy()
        return Plan(actions=(self.low + (self.high - self.low) * u).astype(np.float32))
