"""The narrow world-model interface that planners, RL and evaluation depend on.

`WorldModel` is a Protocol: anything with these members can be planned with, trained in or evaluated, so a
second model can be dropped in (tests/planning/planning_toy.py holds one that is not a network at all).
`FlexWorldModelWrapper` implements it with a FlexWorldModel, a frame tokenizer
(`encode(uint8 (N,H,W,3)) -> (N,c,h,w)`, `decode(latents) -> (N,3,H,W) in [-1,1]`) and a text encoder
(`embed(list[str]) -> (N,384)`), given as objects.

Shapes: a state holds B examples; actions are native units (B, T, A); latents are (B, T', c, h, w) with one
latent per `frame_stride` actions. Randomness goes through an explicit torch.Generator (or noise given
outright). Sampling methods take `steps` (flow-sampling steps of that call; None = the model's default), as
diffusers' pipelines take `num_inference_steps`: no call changes the model. Gradients flow through `rollout`
and `propose(noise=...)` when called under torch.enable_grad() (gradient-based planning, noise steering);
wrap calls in torch.no_grad() otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from flexwm.errors import ConfigError
from flexwm.models import flow
from flexwm.models.world_model import FlexWorldModel

# optional abilities a world model may lack (`WorldModel.capabilities`): "video" = `sample_video` (video mode,
# actions absent); "noise" = `propose` / `sample_video` from initial noise given by the caller (steering)
CAPABILITIES = ("video", "noise")


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
    """Everything planners (flexwm.planning), RL (flexwm.rl) and evaluation (flexwm.evaluation) ask of a model.

    Noise shapes: `rollout(noise=)` (B, n_chunks, F, c, h, w) with n_chunks = ceil(T / horizon) and
    F = horizon // frame_stride; `propose(noise=)` {"video": (B, n, F, c, h, w), "actions": (B, n, H, A)}
    (actions noise in the model's normalised units; a missing key is drawn from `generator`);
    `sample_video(noise=)` (B, n, F, c, h, w).
    """

    embodiment: str
    action_dim: int  # A
    horizon: int  # H: actions per chunk (one `propose` / `inverse` sample)
    frame_stride: int  # actions per predicted latent frame
    context_frames: int  # C: latents a state holds
    latent_shape: tuple[int, int, int]  # (c, h, w) of one latent frame
    image_size: tuple[int, int] | None  # (H, W) of the frames `encode` takes; None: any size
    capabilities: frozenset[str]  # which of CAPABILITIES it has

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each float32 (A,) in native units: the range the model's actions live in."""
        ...

    def encode(self, frames: Any, proprio: Any = None) -> LatentState:
        """uint8 frames (B, H, W, 3) or (B, T, H, W, 3), oldest first -> state with C context latents."""
        ...

    def rollout(self, state: LatentState, actions: Tensor, *, generator: torch.Generator | None = None,
                noise: Tensor | None = None, steps: int | None = None) -> Tensor:
        """Action-conditioned mode: latents (B, T // frame_stride, c, h, w) after native `actions` (B, T, A)."""
        ...

    def propose(self, state: LatentState, instruction: str | None, n: int, *,
                generator: torch.Generator | None = None, noise: dict[str, Tensor] | None = None,
                steps: int | None = None) -> tuple[Tensor, Tensor]:
        """WAM mode: n joint samples per state, (actions (B, n, H, A) native, latents (B, n, F, c, h, w))."""
        ...

    def sample_video(self, state: LatentState, instruction: str | None, n: int, *,
                     generator: torch.Generator | None = None, noise: Tensor | None = None,
                     steps: int | None = None) -> Tensor:
        """Video mode (actions absent): n future samples per state, latents (B, n, F, c, h, w)."""
        ...

    def inverse(self, state: LatentState, future: Tensor, *, generator: torch.Generator | None = None,
                steps: int | None = None) -> Tensor:
        """Inverse dynamics: actions (B, H, A) leading from the state through `future` (B, F, c, h, w)."""
        ...

    def score(self, state: LatentState, future: Tensor, instruction: str | None) -> tuple[Tensor, Tensor]:
        """(P(success), progress in [0, 1]), each (B,), of the window: state's context then `future`
        (B, F, c, h, w). Deterministic."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (..., c, h, w) -> uint8 frames (..., H, W, 3)."""
        ...

    def knows_instruction(self, instruction: str) -> bool | None:
        """Whether the model was trained on this instruction string; None when it cannot tell."""
        ...


def require(wm: WorldModel, capability: str, what: str, instead: str) -> None:
    """ConfigError naming `what` needs `capability` and the alternative `instead`, unless `wm` has it."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; one of {CAPABILITIES}")
    if capability not in wm.capabilities:
        need = "video mode" if capability == "video" else "sampling from given initial noise"
        raise ConfigError(f"{what} needs a world model with {need}; this {type(wm).__name__} has none. "
                          f"Use {instead} instead")


class FlexWorldModelWrapper:
    """WorldModel backed by a FlexWorldModel for one embodiment (all of CAPABILITIES).

    `steps` is the default number of flow-sampling steps of a call that passes none; it is set once here
    (`load_run(steps=...)`) and never changed by callers, who pass `steps=` per call instead. Instructions are
    embedded without writing the text encoder's disk cache: a run's cache records its training instructions.
    """

    capabilities = frozenset(CAPABILITIES)

    def __init__(self, model: FlexWorldModel, tokenizer: Any, text_encoder: Any = None, *, embodiment: str,
                 steps: int = 10, cfg_scale: float = 1.0, ac_noise: str = "sample", ac_guidance: float = 1.0):
        if ac_noise not in ("sample", "zero"):
            raise ConfigError(f"ac_noise must be 'sample' or 'zero', got {ac_noise!r}")
        if not ac_guidance >= 0:
            raise ConfigError(f"ac_guidance must be a number >= 0 (1 = no guidance), got {ac_guidance!r}")
        self.model, self.tokenizer, self.text_encoder = model, tokenizer, text_encoder
        self.embodiment, self.steps, self.cfg_scale = embodiment, int(steps), cfg_scale
        # "zero": action-conditioned rollouts start the flow from zero noise, a deterministic mean-like
        # prediction (lower error, see benchmarks/train.py ac-error --zero-noise); "sample": a random future
        self.ac_noise = ac_noise
        # > 1: action-conditioned rollouts follow the actions more strongly (guidance against the same model
        # with actions absent; two model calls per flow step)
        self.ac_guidance = float(ac_guidance)
        cfg = model.cfg
        self.action_dim = model.adapter(embodiment).action_dim
        self.horizon, self.frame_stride = cfg.action_horizon, cfg.frame_stride
        self.context_frames, self.latent_shape = cfg.context_frames, tuple(cfg.latent_shape)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """Tokenizer downsampling x latent size, when the tokenizer reports its downsampling."""
        down = getattr(getattr(self.tokenizer, "config", None), "downsample", None)
        if down is None:
            return None
        _, h, w = self.latent_shape
        return int(h * down), int(w * down)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The embodiment adapter's action normalisation range (what the model maps to [-1, 1])."""
        a = self.model.adapter(self.embodiment)
        return a.action_low.float().cpu().numpy(), a.action_high.float().cpu().numpy()

    @classmethod
    def from_pretrained(cls, path: Any, *, embodiment: str | None = None, prefer_embodiment: str | None = None,
                        device: str = "cpu", dtype: torch.dtype | None = None, **kwargs: Any) -> FlexWorldModelWrapper:
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

    @property
    def device(self) -> torch.device:
        """Where the network's weights live."""
        return self._param.device

    def _steps(self, steps: int | None) -> int:
        return self.steps if steps is None else int(steps)

    def _text(self, instruction: str | None, n: int) -> dict[str, Tensor]:
        """The instruction as flow conditioning {"text": (n, 384), "has_text": (n,)}; {} without one."""
        if not instruction:
            return {}
        if self.text_encoder is None:
            raise ConfigError("an instruction was given but the wrapper has no text encoder; pass text_encoder=")
        with self._cache_untouched():
            emb = torch.as_tensor(self.text_encoder.embed([instruction]), dtype=self._param.dtype)
        emb = emb.to(self._param.device).reshape(1, -1).expand(n, -1)
        return {"text": emb, "has_text": torch.ones(n, dtype=torch.bool, device=emb.device)}

    @contextlib.contextmanager
    def _cache_untouched(self) -> Iterator[None]:
        autosave = getattr(self.text_encoder, "autosave", False)
        if autosave:
            self.text_encoder.autosave = False
        try:
            yield
        finally:
            if autosave:
                self.text_encoder.autosave = autosave

    def knows_instruction(self, instruction: str) -> bool | None:
        """Whether the text encoder's disk cache (a run's training instructions) held `instruction` when it was
        loaded; None without such a cache."""
        known = getattr(self.text_encoder, "in_disk_cache", None)
        return None if known is None else known(instruction)

    def encode(self, frames: Any, proprio: Any = None) -> LatentState:
        """uint8 frames (B, H, W, 3) or (B, T, H, W, 3), oldest first, frame_stride steps apart -> state.

        With fewer than C frames the oldest is repeated (as at the start of an episode); extra frames are cut.
        """
        frames = torch.as_tensor(frames)
        if frames.dim() == 4:
            frames = frames[:, None]
        B, T = frames.shape[:2]
        C = self.context_frames
        lat = torch.as_tensor(self.tokenizer.encode(frames.reshape(B * T, *frames.shape[2:])))
        lat = lat.to(self._param).reshape(B, T, *lat.shape[1:])
        if T < C:
            lat = torch.cat([lat[:, :1].expand(B, C - T, *lat.shape[2:]), lat], 1)
        p = None if proprio is None else torch.as_tensor(proprio).to(self._param).reshape(B, -1)
        return LatentState(context=lat[:, -C:], proprio=p, embodiment=self.embodiment)

    def rollout(self, state: LatentState, actions: Tensor, *, generator: torch.Generator | None = None,
                noise: Tensor | None = None, steps: int | None = None) -> Tensor:
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
            fut = flow.sample(self.model, cond, generate={"video"}, steps=self._steps(steps), generator=generator,
                              noise=nz, action_scale=self.ac_guidance)["video"]
            chunks.append(fut)
            context, proprio = torch.cat([context, fut], 1)[:, -C:], None
        return torch.cat(chunks, 1)[:, : T // cfg.frame_stride]

    def _sample(self, state: LatentState, instruction: str | None, n: int, generate: set[str],
                noise: dict[str, Tensor] | None, generator: torch.Generator | None,
                steps: int | None) -> dict[str, Tensor]:
        """n samples per state of `generate` under the instruction; outputs (B, n, ...)."""
        rep, B = state.repeat(n), state.batch_size
        cond = dict(embodiment=state.embodiment, context=rep.context, proprio=rep.proprio,
                    **self._text(instruction, rep.batch_size))
        flat = None if noise is None else {k: v.reshape(B * n, *v.shape[2:]) for k, v in noise.items()}
        out = flow.sample(self.model, cond, generate=generate, steps=self._steps(steps), generator=generator,
                          noise=flat, cfg_scale=self.cfg_scale)
        return {k: v.reshape(B, n, *v.shape[1:]) for k, v in out.items()}

    def propose(self, state: LatentState, instruction: str | None, n: int, *,
                generator: torch.Generator | None = None, noise: dict[str, Tensor] | None = None,
                steps: int | None = None) -> tuple[Tensor, Tensor]:
        """WAM mode: n joint (actions (B, n, H, A), latents (B, n, F, c, h, w)) samples per state. `noise`
        {"video": (B, n, F, c, h, w), "actions": (B, n, H, A) normalised} fixes the initial noise;
        differentiable in it under enable_grad."""
        out = self._sample(state, instruction, n, {"video", "actions"}, noise, generator, steps)
        return out["actions"], out["video"]

    def sample_video(self, state: LatentState, instruction: str | None, n: int, *,
                     generator: torch.Generator | None = None, noise: Tensor | None = None,
                     steps: int | None = None) -> Tensor:
        """Video mode: n future-latent samples (B, n, F, c, h, w) given the context and instruction, actions
        absent. `noise` (B, n, F, c, h, w) fixes the initial noise."""
        nz = None if noise is None else {"video": noise}
        return self._sample(state, instruction, n, {"video"}, nz, generator, steps)["video"]

    def inverse(self, state: LatentState, future: Tensor, *, generator: torch.Generator | None = None,
                steps: int | None = None) -> Tensor:
        """Inverse dynamics: actions (B, H, A) that lead from the state through `future` (B, F, c, h, w)."""
        cond = dict(embodiment=state.embodiment, context=state.context, proprio=state.proprio, future=future)
        return flow.sample(self.model, cond, generate={"actions"}, steps=self._steps(steps),
                           generator=generator)["actions"]

    def score(self, state: LatentState, future: Tensor, instruction: str | None) -> tuple[Tensor, Tensor]:
        """(success probability, progress), each (B,), of reaching `future` (B, F, c, h, w) from the state."""
        text = self._text(instruction, state.batch_size)
        return flow.score(self.model, state.context, future, text.get("text"), embodiment=state.embodiment,
                          proprio=state.proprio, has_text=text.get("has_text"))

    def decode(self, latents: Tensor) -> Tensor:
        """Latents (..., c, h, w) -> uint8 frames (..., H, W, 3)."""
        lead = latents.shape[:-3]
        img = torch.as_tensor(self.tokenizer.decode(latents.reshape(-1, *latents.shape[-3:])))
        img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
        return img.reshape(*lead, *img.shape[1:])

    # -- the success head, for re-fitting it on imagined futures (flexwm.evaluation.imagined_head) ----------
    def score_features(self, state: LatentState, future: Tensor,
                       instruction: str | None) -> tuple[Tensor, Tensor, Tensor]:
        """`score` plus the success head's input feature (B, d) of each window."""
        seen: list[Tensor] = []
        hook = self.model.head.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach()))
        try:
            p, progress = self.score(state, future, instruction)
        finally:
            hook.remove()
        return p, progress, seen[-1]

    def success_logit(self) -> tuple[np.ndarray, float]:
        """The success logit's weight (d,) float64 and bias: P(success) = sigmoid(feature @ weight + bias)."""
        head = self.model.head
        return head.weight[0].detach().double().cpu().numpy(), float(head.bias[0])

    def weights_with_success_logit(self, weight: Any, bias: float) -> dict[str, Tensor]:
        """A copy of the network's weights with the success logit replaced (the rest, progress included, kept)."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        state["head.weight"][0] = torch.as_tensor(weight).to(state["head.weight"].dtype)
        state["head.bias"][0] = float(bias)
        return state
