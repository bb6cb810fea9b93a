"""Acting with the world-action model directly: instruction in, actions out.

* `wam`: frames + actions generated jointly (`wm.propose`, one sample); execute its actions.
* `wam-seq`: frames first, then actions decoded from them by inverse dynamics (`wm.inverse`). The frames come
  from video mode (`video_source="video"`: the model generates video only, actions absent; needs a
  FlexWorldModelAdapter) or from a joint proposal whose actions are thrown away (`"propose"`: any WorldModel).

`sample_video` and `propose_with_noise` reach below the narrow WorldModel interface into a
FlexWorldModelAdapter's flow sampler; they are the only planning code that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.config import field
from flexwm.errors import ConfigError
from flexwm.models.interface import LatentState
from flexwm.planning.base import Plan, WMPlanner, flow_steps, to_numpy


@dataclass
class WAMConfig:
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")
    video_source: str = field("video", choices=("video", "propose"),
                              help="wam-seq: frames from video mode, or from a joint proposal (actions dropped)")
    flow_steps: int | None = field(None, ge=1, help="flow-sampling steps; None = the model's")


@dataclass
class SteeredWAMConfig:
    noise_policy: str = field("", help="directory of a noise policy (flexwm steer-wam --out DIR)")
    std: float = field(1.0, ge=0.0, help="action-noise std around the policy's mean (1: as the WAM samples)")
    execute: int | None = field(None, ge=1, help="actions executed before replanning; None = frame_stride")


def _flex_parts(wm: Any, what: str) -> tuple[Any, Any]:
    model, text_encoder = getattr(wm, "model", None), getattr(wm, "text_encoder", None)
    if model is None or not hasattr(model, "adapter"):
        raise ConfigError(f"{what} needs a FlexWorldModelAdapter (flow sampler access); this world model is a "
                          f"{type(wm).__name__}. Use video_source='propose' / steer_noise=False instead")
    return model, text_encoder


def _text_cond(wm: Any, text_encoder: Any, instruction: str | None, n: int, like: Tensor) -> dict[str, Any]:
    if not instruction:
        return {}
    if text_encoder is None:
        raise ConfigError("an instruction was given but the world model has no text encoder")
    emb = torch.as_tensor(text_encoder.embed([instruction])).to(like).reshape(1, -1).expand(n, -1)
    return {"text": emb, "has_text": torch.ones(n, dtype=torch.bool, device=like.device)}


def sample_video(wm: Any, state: LatentState, instruction: str | None, n: int, *,
                 generator: torch.Generator | None = None) -> Tensor:
    """Video mode: n future-latent samples (B, n, F, c, h, w) given the context and instruction, actions absent."""
    from flexwm.models import flow

    model, text_encoder = _flex_parts(wm, "video_source='video'")
    rep = state.repeat(n)
    cond = dict(embodiment=state.embodiment, context=rep.context, proprio=rep.proprio,
                **_text_cond(wm, text_encoder, instruction, rep.batch_size, rep.context))
    video = flow.sample(model, cond, generate={"video"}, steps=wm.steps, generator=generator,
                        cfg_scale=getattr(wm, "cfg_scale", 1.0))["video"]
    return video.reshape(state.batch_size, n, *video.shape[1:])


def propose_with_noise(wm: Any, state: LatentState, instruction: str | None,
                       noise: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """WAM mode from given initial noise {"video": (N, F, c, h, w), "actions": (N, H, A) normalized}, one
    state per noise row (state of batch 1 is repeated). Differentiable in the noise under enable_grad.
    Returns (actions (N, H, A) native, latents (N, F, c, h, w))."""
    from flexwm.models import flow

    model, text_encoder = _flex_parts(wm, "steering the WAM noise")
    N = noise["video"].shape[0]
    rep = state.repeat(N) if state.batch_size == 1 else state
    cond = dict(embodiment=state.embodiment, context=rep.context, proprio=rep.proprio,
                **_text_cond(wm, text_encoder, instruction, N, rep.context))
    out = flow.sample(model, cond, generate={"video", "actions"}, steps=wm.steps, noise=noise,
                      cfg_scale=getattr(wm, "cfg_scale", 1.0))
    return out["actions"], out["video"]


class WAMPlanner(WMPlanner):
    """`wam` (joint frames + actions) or `wam-seq` (frames, then inverse dynamics)."""

    def __init__(self, wm: Any, cfg: WAMConfig, sequential: bool = False):
        super().__init__(wm, chunks=1)
        self.cfg, self.sequential = cfg, sequential
        self.name = "wam-seq" if sequential else "wam"
        if sequential and cfg.video_source == "video":
            _flex_parts(wm, "wam-seq with video_source='video'")

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        state = self.encode(frames, proprio)
        with torch.no_grad(), flow_steps(self.wm, self.cfg.flow_steps):
            if not self.sequential:
                actions, video = self.wm.propose(state, instruction or None, 1, generator=generator)
                return Plan(actions=to_numpy(actions[0, 0]), latents=video[0, 0].cpu())
            if self.cfg.video_source == "video":
                video = sample_video(self.wm, state, instruction or None, 1, generator=generator)
            else:
                video = self.wm.propose(state, instruction or None, 1, generator=generator)[1]
            actions = self.wm.inverse(state, video[:, 0], generator=generator)
        return Plan(actions=to_numpy(actions[0]), latents=video[0, 0].cpu(),
                    info={"video_source": self.cfg.video_source})
