"""The narrow world-model interface that planners, RL and evaluation depend on.

`WorldModel` is a Protocol: anything with these methods can be planned with, trained in or evaluated, so a
second model can be dropped in. `FlexWorldModelAdapter` implements it with a FlexWorldModel, a frame
tokenizer (`encode(uint8 (N,H,W,3)) -> (N,c,h,w)`, `decode(latents) -> (N,3,H,W) in [-1,1]`) and a text
encoder (`embed(list[str]) -> (N,384)`), given as objects.

Shapes: a state holds B examples; actions are native units (B, T, A); latents are (B, T', c, h, w) with one
latent per `frame_stride` actions. Randomness goes through an explicit torch.Generator. Gradients flow
through `rollout` when it is called under torch.enable_grad() (gradient-based planning); wrap calls in
torch.no_grad() otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from flexwm.errors import ConfigError
from flexwm.models import flow
from flexwm.models.world_model import FlexWorldModel


@dataclass
class LatentState:
    """What the model knows at the decision point: the last C context latents, spaced frame_stride apart."""

    context: Tensor  # (B, C, c, h, w)
    proprio: Tensor | None  # (B, P) at the last context frame; None for imagined states
    embodiment: str

    @property
    def batch_size(self) -> int:
        return self.context.shape[0]

    def repeat(self, n: int) -> LatentState:
        """Each example repeated n times (example-major), e.g. for n candidate plans per state."""
        rep = lambda x: None if x is None else x.repeat_interleave(n, dim=0)  # noqa: E731
        return dataclasses.replace(self, context=rep(self.context), proprio=rep(self.proprio))


@runtime_checkable
class WorldModel(Protocol):
    embodiment: str
    action_dim: int
    horizon: int  # actions per chunk
    frame_stride: int  # actions per predicted latent frame

    def encode(self, frames: Any, proprio: Any = None) -> LatentState: ...

    def rollout(self, state: LatentState, actions: Tensor, *, generator: torch.Generator | None = None,
                noise: Tensor | None = None) -> Tensor: ...

    def propose(self, state: LatentState, instruction: str | None, n: int, *,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]: ...

    def inverse(self, state: LatentState, future: Tensor, *,
                generator: torch.Generator | None = None) -> Tensor: ...

    def score(self, state: LatentState, future: Tensor, instruction: str | None) -> tuple[Tensor, Tensor]: ...

    def decode(self, latents: Tensor) -> Tensor: ...


class FlexWorldModelAdapter:
    """WorldModel backed by a FlexWorldModel for one embodiment."""

    def __init__(self, model: FlexWorldModel, tokenizer: Any, text_encoder: Any = None, *, embodiment: str,
                 steps: int = 10, cfg_scale: float = 1.0, ac_noise: str = "sample", ac_guidance: float = 1.0):
        if ac_noise not in ("sample", "zero"):
            raise ConfigError(f"ac_noise must be 'sample' or 'zero', got {ac_noise!r}")
        if not ac_guidance >= 0:
            raise ConfigError(f"ac_guidance must be a number >= 0 (1 = no guidance), got {ac_guidance!r}")
        self.model, self.tokenizer, self.text_encoder = model, tokenizer, text_encoder
        self.embodiment, self.steps, self.cfg_scale = embodiment, steps, cfg_scale
        # "zero": action-conditioned rollouts start the flow from zero noise, a deterministic mean-like
        # prediction (lower error, see benchmarks/train.py ac-error --zero-noise); "sample": a random future
        self.ac_noise = ac_noise
        # > 1: action-conditioned rollouts follow the actions more strongly (guidance against the same model
        # with actions absent; two model calls per flow step)
        self.ac_guidance = float(ac_guidance)
        self.action_dim = model.adapter(embodiment).action_dim
        self.horizon, self.frame_stride = model.cfg.action_horizon, model.cfg.frame_stride

    @classmethod
    def from_pretrained(cls, path: Any, *, embodiment: str | None = None, prefer_embodiment: str | None = None,
                        device: str = "cpu", dtype: torch.dtype | None = None, **kwargs: Any) -> FlexWorldModelAdapter:
        """Load a training run (its latest checkpoint), a checkpoint directory or an exported model folder
        (`flexwm export`). `embodiment`: the adapter to act with (default: the model's only one, or
        `prefer_embodiment` when it knows several); other keyword arguments go to the constructor."""
        from flexwm.models.pretrained import load_components, pick_embodiment

        model, tokenizer, text = load_components(path, device=device, dtype=dtype)
        return cls(model, tokenizer, text, embodiment=pick_embodiment(model, path, embodiment, prefer_embodiment),
                   **kwargs)

    @property
    def _param(self) -> Tensor:
        return next(self.model.parameters())

    def _text(self, instruction: str | None, n: int) -> tuple[Tensor | None, Tensor | None]:
        if not instruction:
            return None, None
        if self.text_encoder is None:
            raise ConfigError("an instruction was given but the adapter has no text encoder; pass text_encoder=")
        emb = torch.as_tensor(self.text_encoder.embed([instruction]), dtype=self._param.dtype)
        emb = emb.to(self._param.device).reshape(1, -1).expand(n, -1)
        return emb, torch.ones(n, dtype=torch.bool, device=emb.device)

    def encode(self, frames: Any, proprio: Any = None) -> LatentState:
        """uint8 frames (B, H, W, 3) or (B, T, H, W, 3), oldest first, frame_stride steps apart -> state.

        With fewer than C frames the oldest is repeated (as at the start of an episode); extra frames are cut.
        """
        frames = torch.as_tensor(frames)
        if frames.dim() == 4:
            frames = frames[:, None]
        B, T = frames.shape[:2]
        C = self.model.cfg.context_frames
        lat = torch.as_tensor(self.tokenizer.encode(frames.reshape(B * T, *frames.shape[2:])))
        lat = lat.to(self._param).reshape(B, T, *lat.shape[1:])
        if T < C:
            lat = torch.cat([lat[:, :1].expand(B, C - T, *lat.shape[2:]), lat], 1)
        p = None if proprio is None else torch.as_tensor(proprio).to(self._param).reshape(B, -1)
        return LatentState(context=lat[:, -C:], proprio=p, embodiment=self.embodiment)

    def rollout(self, state: LatentState, actions: Tensor, *, generator: torch.Generator | None = None,
                noise: Tensor | None = None) -> Tensor:
        """Imagine the latents after `actions` (B, T, A): returns (B, T // frame_stride, c, h, w).

        Chunked autoregressively by H actions; each chunk sees only the last C latents (bounded context), so
        compute per chunk is constant. The last chunk is padded by repeating the last action. `noise`
        (B, n_chunks, F, c, h, w) fixes the initial noise of every chunk (for steering / gradient planning).
        """
        cfg = self.model.cfg
        B, T, A = actions.shape
        H, C = cfg.action_horizon, cfg.context_frames
        n_chunks = -(-T // H)
        if T % H:
            actions = torch.cat([actions, actions[:, -1:].expand(B, n_chunks * H - T, A)], 1)
        context, proprio, chunks = state.context, state.proprio, []
        if noise is None and self.ac_noise == "zero":
            noise = torch.zeros(B, n_chunks, cfg.future_frames, *cfg.latent_shape, device=self._param.device,
                                dtype=self._param.dtype)
        for k in range(n_chunks):
            cond = dict(embodiment=state.embodiment, context=context, proprio=proprio,
                        actions=actions[:, k * H:(k + 1) * H])
            nz = None if noise is None else {"video": noise[:, k]}
            fut = flow.sample(self.model, cond, generate={"video"}, steps=self.steps, generator=generator,
                              noise=nz, action_scale=self.ac_guidance)["video"]
            chunks.append(fut)
            context, proprio = torch.cat([context, fut], 1)[:, -C:], None
        return torch.cat(chunks, 1)[:, : T // cfg.frame_stride]

    def propose(self, state: LatentState, instruction: str | None, n: int, *,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """WAM mode: n joint (actions (B, n, H, A), latents (B, n, F, c, h, w)) samples per state."""
        rep = state.repeat(n)
        text, has_text = self._text(instruction, rep.batch_size)
        cond = dict(embodiment=state.embodiment, context=rep.context, proprio=rep.proprio, text=text,
                    has_text=has_text)
        out = flow.sample(self.model, cond, generate={"video", "actions"}, steps=self.steps,
                          generator=generator, cfg_scale=self.cfg_scale)
        B = state.batch_size
        return out["actions"].reshape(B, n, *out["actions"].shape[1:]), out["video"].reshape(
            B, n, *out["video"].shape[1:])

    def inverse(self, state: LatentState, future: Tensor, *,
                generator: torch.Generator | None = None) -> Tensor:
        """Inverse dynamics: actions (B, H, A) that lead from the state through `future` (B, F, c, h, w)."""
        cond = dict(embodiment=state.embodiment, context=state.context, proprio=state.proprio, future=future)
        return flow.sample(self.model, cond, generate={"actions"}, steps=self.steps, generator=generator)["actions"]

    def score(self, state: LatentState, future: Tensor, instruction: str | None) -> tuple[Tensor, Tensor]:
        """(success probability, progress), each (B,), of reaching `future` (B, F, c, h, w) from the state."""
        text, has_text = self._text(instruction, state.batch_size)
        return flow.score(self.model, state.context, future, text, embodiment=state.embodiment,
                          proprio=state.proprio, has_text=has_text)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (..., c, h, w) -> uint8 frames (..., H, W, 3)."""
        lead = latents.shape[:-3]
        img = torch.as_tensor(self.tokenizer.decode(latents.reshape(-1, *latents.shape[-3:])))
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        return img.reshape(*lead, *img.shape[1:])
