"""Acting with the world-action model directly: instruction in, actions out.

* `wam`: frames + actions generated jointly (`wm.propose`, one sample); execute its actions.
* `wam-seq`: frames first, then actions decoded from them by inverse dynamics (`wm.inverse`). The frames come
  from video mode (`video_source="video"`: `wm.sample_video`, actions absent; needs a world model with the
  "video" capability) or from a joint proposal whose actions are thrown away (`"propose"`: any WorldModel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flexwm.config import field
from flexwm.models.interface import WorldModel, require
from flexwm.planning.base import Plan, WMPlanner, to_numpy


@dataclass
class WAMConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    video_source: str = field("video", choices=("video", "propose"),
                              help="wam-seq: frames from video mode, or from a joint proposal (actions dropped)")
    flow_steps: int | None = field(None, ge=1, help="flow-sampling steps; None = the model's")
    ensemble: float | None = field(None, ge=0.0, help="temporal ensembling: plan every step and execute the "
                                                      "exp(-ensemble * i)-weighted mean of the overlapping plans "
                                                      "(i = 0 oldest); None = off")


@dataclass
class SteeredWAMConfig:
    noise_policy: str = field("", help="directory of a noise policy (flexwm steer-wam --out DIR)")
    std: float = field(1.0, ge=0.0, help="action-noise std around the policy's mean (1: as the WAM samples)")
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")


class WAMPlanner(WMPlanner):
    """`wam` (joint frames + actions) or `wam-seq` (frames, then inverse dynamics)."""

    def __init__(self, wm: WorldModel, cfg: WAMConfig, sequential: bool = False):
        super().__init__(wm, chunks=1)
        self.cfg, self.sequential = cfg, sequential
        self.name = "wam-seq" if sequential else "wam"
        if sequential and cfg.video_source == "video":
            require(wm, "video", "wam-seq with video_source='video'", "video_source='propose'")

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        state, steps = self.encode(frames, proprio), self.cfg.flow_steps
        with torch.no_grad():
            if not self.sequential:
                actions, video = self.wm.propose(state, instruction or None, 1, generator=generator, steps=steps)
                return Plan(actions=to_numpy(actions[0, 0]), latents=video[0, 0].cpu())
            if self.cfg.video_source == "video":
                video = self.wm.sample_video(state, instruction or None, 1, generator=generator, steps=steps)
            else:
                video = self.wm.propose(state, instruction or None, 1, generator=generator, steps=steps)[1]
            actions = self.wm.inverse(state, video[:, 0], generator=generator, steps=steps)
        return Plan(actions=to_numpy(actions[0]), latents=video[0, 0].cpu(),
                    info={"video_source": self.cfg.video_source})
