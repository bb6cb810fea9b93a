"""The flexibly conditioned world model: one transformer, every conditioning mode.

Token layout of one example (N tokens, bidirectional attention over all of them):

    [embodiment, instruction, proprio, readout | context patches (C frames) | future patches (F) | action tokens]
     group 0 ("condition")                      group 0                       group 1 ("video")   group 2 ("action")

* frame latents (c, h, w) are cut into p x p patches: (h/p)*(w/p) tokens per frame, with learned frame-index
  and patch-position embeddings; context and future frames share the patch projection.
* `actions_per_token` consecutive actions (normalized to [-1, 1] per embodiment) form one action token.
* a modality can be ABSENT: its tokens are replaced by a learned absent token (the input values are never
  read), its group is conditioned on a learned "absent" vector instead of a time. A dropped instruction is
  the learned null embedding, a dropped proprio the learned absent-proprio token.

Time conditioning (per modality, "adaLN-Zero by token group"): each of the three groups gets one
conditioning vector per example: group 0 a learned constant, group 1 the embedding of t_video, group 2 the
embedding of t_action (or the absent vectors). Every block modulates LayerNorm shift/scale/gate from the
vector of the token's group, as in DiT, and the vector is also added to the tokens at the input so attention
from other tokens sees it in layer one. adaLN is computed on (B, 3, d) and gathered per token, so it costs
almost nothing, while giving every layer direct multiplicative access to its modality's noise level (DiT
found this much better than in-context time tokens). t = 0 means clean (a condition), t = 1 pure noise.

The trunk (the blocks between the token embeddings and the output layers) is flexwm's `Block` stack, or with
`backbone=diffusers:wan` the blocks of a diffusers video transformer, driven with the same tokens and per-group
conditioning (flexwm.models.video_backbone; docs/pretrained-video.md).

The network predicts rectified-flow velocities (noise - x0) for future latents and normalized actions, and
from the readout token a success logit and progress in [0, 1]. Losses and samplers live in `flow.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from flexwm.config import field, from_dict, to_dict, validate
from flexwm.errors import ConfigError
from flexwm.io import check_state_dict, load_pretrained_dir, save_pretrained_dir
from flexwm.models.video_backbone import BACKBONES, FINETUNE_MODES, read_backbone_config, trunk_shape

MODES = ("wam", "ac", "inverse", "video", "policy", "score", "uniform")
VARIANTS = ("flexible", "wam-only", "ac-only")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _default_embodiments() -> dict[str, dict[str, int]]:
    return {"sawyer": {"action_dim": 4, "proprio_dim": 4}}


def _default_mode_weights() -> dict[str, float]:
    return {"wam": 1.0, "ac": 1.0, "inverse": 0.5, "video": 0.5, "policy": 0.5, "score": 0.5, "uniform": 0.5}


@dataclass
class WorldModelConfig:
    # frame latents (from the frame tokenizer) and the chunk the model sees
    latent_shape: tuple[int, int, int] = field((4, 8, 8), help="(c, h, w) of one frame latent")
    patch_size: int = field(2, ge=1, help="latent patch side; tokens per frame = (h/p)*(w/p)")
    context_frames: int = field(1, ge=1, help="C context frames, spaced frame_stride steps apart")
    action_horizon: int = field(8, ge=1, help="H actions per chunk")
    frame_stride: int = field(4, ge=1, help="future frame k follows actions 0..(k+1)*stride-1; F = H/stride")
    actions_per_token: int = field(2, ge=1, help="consecutive actions grouped into one token")
    # transformer trunk
    d_model: int = field(256, ge=8)
    n_layers: int = field(4, ge=1)
    n_heads: int = field(4, ge=1)
    mlp_ratio: float = field(4.0, ge=1.0)
    dropout: float = field(0.0, ge=0.0, le=0.9)
    text_dim: int = field(384, ge=1, help="instruction embedding size (frozen MiniLM: 384)")
    # the trunk: flexwm's own blocks, or a diffusers video transformer's (flexwm.models.video_backbone)
    backbone: str = field("native", choices=("native", *BACKBONES),
                          help="native = flexwm's transformer; diffusers:wan = WanTransformer3DModel blocks "
                               "(docs/pretrained-video.md)")
    pretrained: str | None = field(
        None, help="local diffusers folder (save_pretrained output or a downloaded pipeline) for the backbone")
    backbone_config: dict[str, Any] = field(
        default_factory=dict, help="the diffusers class's config (read from `pretrained` when empty); it fixes "
                                   "d_model, n_heads, n_layers and patch_size")
    trunk_finetune: str = field("full", choices=FINETUNE_MODES,
                                help="diffusers trunk: train all of it, only `trunk_blocks` (partial), or LoRA")
    trunk_blocks: list[int] = field(default_factory=list, help="partial: trunk blocks that train (default: last)")
    lora_rank: int = field(16, ge=1, help="LoRA rank of the trunk's attention and feed-forward projections")
    lora_alpha: float = field(16.0, ge=1e-6, help="LoRA scale numerator (scale = alpha / rank)")
    embodiments: dict[str, dict[str, int]] = field(
        default_factory=_default_embodiments, help="name -> {action_dim, proprio_dim}")
    # training recipe (read by flow.sample_modes / flow.flex_loss)
    variant: str = field("flexible", choices=VARIANTS)
    mode_weights: dict[str, float] = field(default_factory=_default_mode_weights, help=f"weights over {MODES}")
    instruction_drop: float = field(0.1, ge=0.0, le=1.0, help="P(instruction -> null) where one is allowed")
    proprio_drop: float = field(0.1, ge=0.0, le=1.0, help="P(proprio -> absent); imagined states have none")
    score_failure_instruction: bool = field(
        True, help="score mode keeps the attempted instruction of failures (else success <=> has text)")
    video_residual: bool = field(
        False, help="generate future latents as scaled differences from the last context latent (copying is 0); "
                    "measured worse on Meta-World (benchmarks/results/ac_error_variants.json), so off by default")
    time_sampling: str = field("logit_normal", choices=("uniform", "logit_normal"))
    logit_normal_mean: float = field(0.0)
    logit_normal_std: float = field(1.0, ge=0.01)
    video_loss_weight: float = field(1.0, ge=0.0)
    action_loss_weight: float = field(1.0, ge=0.0)
    success_loss_weight: float = field(0.5, ge=0.0, help="untuned")
    progress_loss_weight: float = field(0.5, ge=0.0, help="untuned")

    def __post_init__(self) -> None:
        validate(self)
        # a diffusers backbone's config fixes the width and depth; the checks that need both `backbone` and
        # `pretrained` wait for the model (FlexWorldModel), so --set overrides may come in any order
        if self.backbone != "native" and not self.backbone_config and self.pretrained:
            self.backbone_config = read_backbone_config(self.pretrained)
        if self.backbone != "native" and self.backbone_config:
            for k, v in trunk_shape(self.backbone, self.backbone_config).items():
                setattr(self, k, v)
        c, h, w = self.latent_shape
        p = self.patch_size
        if min(c, h, w) < 1 or h % p or w % p:
            raise ConfigError(f"config key 'patch_size' = {p} must divide latent h and w {self.latent_shape[1:]}")
        if self.action_horizon % self.frame_stride:
            raise ConfigError(f"config key 'action_horizon' = {self.action_horizon} must be a multiple of "
                              f"'frame_stride' = {self.frame_stride}")
        if self.action_horizon % self.actions_per_token:
            raise ConfigError(f"config key 'action_horizon' = {self.action_horizon} must be a multiple of "
                              f"'actions_per_token' = {self.actions_per_token}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"config key 'd_model' = {self.d_model} must be divisible by 'n_heads' = {self.n_heads}")
        if not self.embodiments:
            raise ConfigError("config key 'embodiments' is empty; give at least one name -> {action_dim, proprio_dim}")
        for name, spec in self.embodiments.items():
            check_embodiment(name, spec)
        for mode, wgt in self.mode_weights.items():
            if mode not in MODES:
                close = difflib.get_close_matches(mode, MODES, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown mode {mode!r} in config key 'mode_weights'.{hint} Valid: {list(MODES)}")
            if not isinstance(wgt, (int, float)) or wgt < 0:
                raise ConfigError(f"config key 'mode_weights.{mode}' = {wgt!r} must be a number >= 0")
        if sum(self.mode_weights.values()) <= 0:
            raise ConfigError("config key 'mode_weights' gives every mode weight 0; give at least one weight > 0")

    @property
    def future_frames(self) -> int:
        return self.action_horizon // self.frame_stride

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_shape[1] // self.patch_size) * (self.latent_shape[2] // self.patch_size)

    @property
    def action_tokens(self) -> int:
        return self.action_horizon // self.actions_per_token

    @property
    def n_tokens(self) -> int:
        return 4 + (self.context_frames + self.future_frames) * self.tokens_per_frame + self.action_tokens


def check_embodiment(name: str, spec: Any) -> dict[str, int]:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"embodiment name {name!r} must start with a letter and use only letters, digits, _ or -")
    keys = {"action_dim", "proprio_dim"}
    if not isinstance(spec, dict) or set(spec) != keys:
        got = set(spec) if isinstance(spec, dict) else spec
        raise ConfigError(f"embodiment {name!r} must be {{'action_dim': int, 'proprio_dim': int}}; got {spec!r} "
                          f"(unknown {sorted(got - keys) if isinstance(got, set) else '?'})")
    for k, v in spec.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"embodiment {name!r}: {k} = {v!r} must be an integer >= 1")
    return dict(spec)


PRESETS: dict[str, dict[str, Any]] = {
    # tests: 18 tokens, trains in seconds
    "tiny": dict(latent_shape=(4, 8, 8), patch_size=4, context_frames=1, action_horizon=4, frame_stride=2,
                 actions_per_token=2, d_model=64, n_layers=2, n_heads=4),
    # this machine (2 CPU cores): 4 + 3*16 + 4 = 56 tokens
    "cpu": dict(latent_shape=(4, 8, 8), patch_size=2, context_frames=1, action_horizon=8, frame_stride=4,
                actions_per_token=2, d_model=256, n_layers=4, n_heads=4),
    # an accelerator: 4 + 6*16 + 8 = 108 tokens, ~57M parameters
    "gpu": dict(latent_shape=(4, 8, 8), patch_size=2, context_frames=2, action_horizon=16, frame_stride=4,
                actions_per_token=2, d_model=512, n_layers=12, n_heads=8, dropout=0.0),
}


def preset(name: str, **overrides: Any) -> WorldModelConfig:
    """A named preset (tiny / cpu / gpu) with keyword overrides, strictly checked."""
    if name not in PRESETS:
        raise ConfigError(f"unknown world-model preset {name!r}; choose one of {list(PRESETS)}")
    return from_dict(WorldModelConfig, {**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------------
# building blocks


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 as in DiT). (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, T, c, h, w) -> (B, T*(h/p)*(w/p), c*p*p)."""
    B, T, c, h, w = x.shape
    x = x.reshape(B, T, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(B, T * (h // p) * (w // p), c * p * p)


def unpatchify(x: Tensor, T: int, shape: tuple[int, int, int], p: int) -> Tensor:
    """Inverse of `patchify`: (B, T*(h/p)*(w/p), c*p*p) -> (B, T, c, h, w)."""
    c, h, w = shape
    B = x.shape[0]
    x = x.reshape(B, T, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, T, c, h, w)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-LN transformer block with adaLN-Zero modulation given per token."""

    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Dropout(cfg.dropout),
                                 nn.Linear(hidden, d))
        self.ada = nn.Linear(d, 6 * d)  # zero-initialised: every block starts as the identity

    def forward(self, x: Tensor, cond: Tensor, group: Tensor) -> Tensor:
        # cond: (B, G, d) one vector per token group; group: (N,) group index of each token
        mod = self.ada(F.silu(cond))[:, group]  # (B, N, 6d)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        B, N, d = x.shape
        q, k, v = self.qkv(modulate(self.norm1(x), shift1, scale1)).split(d, dim=-1)
        q, k, v = (z.view(B, N, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = self.proj(y.transpose(1, 2).reshape(B, N, d))
        x = x + gate1 * F.dropout(y, self.dropout, self.training)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class EmbodimentAdapter(nn.Module):
    """Everything specific to one embodiment: its token, action/proprio encoders, action decoder, statistics."""

    def __init__(self, cfg: WorldModelConfig, action_dim: int, proprio_dim: int):
        super().__init__()
        d, k = cfg.d_model, cfg.actions_per_token
        self.action_dim, self.proprio_dim = action_dim, proprio_dim
        self.token = nn.Parameter(torch.randn(d) * 0.02)
        self.action_in = nn.Linear(k * action_dim, d)
        self.action_out = nn.Linear(d, k * action_dim)  # zero-initialised
        self.proprio_in = nn.Sequential(nn.Linear(proprio_dim, d), nn.SiLU(), nn.Linear(d, d))
        nn.init.zeros_(self.action_out.weight)
        nn.init.zeros_(self.action_out.bias)
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        self.register_buffer("proprio_mean", torch.zeros(proprio_dim))
        self.register_buffer("proprio_std", torch.ones(proprio_dim))


@dataclass
class ModelOutput:
    video: Tensor  # (B, F, c, h, w) predicted velocity of the future latents
    actions: Tensor  # (B, H, A) predicted velocity of the normalized actions
    success_logit: Tensor  # (B,)
    progress: Tensor  # (B,) in [0, 1]


# ----------------------------------------------------------------------------------------------------------
# the model


class FlexWorldModel(nn.Module):
    """`load_pretrained`: read a diffusers backbone's weights from `cfg.pretrained` (when training starts);
    otherwise the trunk starts random, as before a checkpoint's weights are loaded into it."""

    def __init__(self, cfg: WorldModelConfig, *, load_pretrained: bool = False):
        super().__init__()
        self.cfg = cfg
        native = cfg.backbone == "native"
        if native and (cfg.pretrained or cfg.trunk_finetune != "full"):
            raise ConfigError("config keys 'model.pretrained' and 'model.trunk_finetune' are for a diffusers "
                              f"backbone; set model.backbone to one of {list(BACKBONES)} or leave them unset")
        if not native and not cfg.backbone_config:
            raise ConfigError(f"model.backbone={cfg.backbone} needs model.pretrained=DIR (a local diffusers "
                              "transformer or pipeline folder) or model.backbone_config (the class's config)")
        d, C, Fr = cfg.d_model, cfg.context_frames, cfg.future_frames
        c, p = cfg.latent_shape[0], cfg.patch_size
        self.patch_in = nn.Linear(c * p * p, d)
        self.text_proj = nn.Linear(cfg.text_dim, d)
        emb = lambda *shape: nn.Parameter(torch.randn(*shape) * 0.02)  # noqa: E731
        self.special_pos = emb(4, d)  # embodiment, instruction, proprio, readout
        self.null_text, self.absent_proprio, self.readout = emb(d), emb(d), emb(d)
        self.absent_video, self.absent_action = emb(d), emb(d)
        self.frame_pos, self.patch_pos = emb(C + Fr, d), emb(cfg.tokens_per_frame, d)
        self.action_pos = emb(cfg.action_tokens, d)
        if native:  # a diffusers trunk brings its own time embedding
            self.time_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.group_emb = emb(3, d)  # condition / video / action
        self.absent_cond = emb(2, d)  # conditioning vector of an absent video / action group
        self.adapters = nn.ModuleDict({n: EmbodimentAdapter(cfg, **s) for n, s in cfg.embodiments.items()})
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)] if native else [])
        self.gradient_checkpointing = False  # recompute block activations in backward (training option)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.video_out = nn.Linear(d, c * p * p)
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 2)  # success logit, progress logit
        n_cond = 4 + C * cfg.tokens_per_frame
        group = [0] * n_cond + [1] * (Fr * cfg.tokens_per_frame) + [2] * cfg.action_tokens
        self.register_buffer("group", torch.tensor(group, dtype=torch.long), persistent=False)
        if cfg.video_residual:  # per-channel std of (future - last context) latents, set from data
            self.register_buffer("video_delta_std", torch.ones(c))
        self.apply(self._init_linear)
        for m in [*(b.ada for b in self.blocks), self.final_ada, self.video_out]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        for a in self.adapters.values():
            nn.init.zeros_(a.action_out.weight)
        if not native:  # added after flexwm's initialisation, which must not touch pretrained weights
            from flexwm.models.video_backbone import DiffusersTrunk

            self.trunk = DiffusersTrunk(cfg, load_weights=load_pretrained)
            if load_pretrained:
                self.trunk.copy_patch_layers(self.patch_in, self.video_out, c, p)
            self.trunk.set_finetune(cfg.trunk_finetune, list(cfg.trunk_blocks), cfg.lora_rank, cfg.lora_alpha)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # -- embodiments and normalisation ----------------------------------------------------------------------
    def adapter(self, embodiment: str) -> EmbodimentAdapter:
        if embodiment not in self.adapters:
            raise ConfigError(f"embodiment {embodiment!r} is not in this model (it has {sorted(self.adapters)}); "
                              "add it with model.add_embodiment(name, action_dim, proprio_dim) and fine-tune it")
        return self.adapters[embodiment]  # type: ignore[return-value]

    def add_embodiment(self, name: str, action_dim: int, proprio_dim: int) -> None:
        spec = check_embodiment(name, {"action_dim": action_dim, "proprio_dim": proprio_dim})
        if name in self.adapters:
            raise ConfigError(f"embodiment {name!r} already exists in this model")
        ref = self.patch_in.weight
        self.adapters[name] = EmbodimentAdapter(self.cfg, **spec).to(device=ref.device, dtype=ref.dtype)
        self.cfg = dataclasses.replace(self.cfg, embodiments={**self.cfg.embodiments, name: spec})

    def adapter_parameters(self, embodiment: str) -> list[nn.Parameter]:
        return list(self.adapter(embodiment).parameters())

    def trunk_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("adapters.")]

    def set_action_stats(self, embodiment: str, low: Any, high: Any) -> None:
        """Map native actions in [low, high] (dataset statistics, e.g. min/max or 1st/99th percentile) to [-1, 1]."""
        a = self.adapter(embodiment)
        low, high = (torch.as_tensor(v, dtype=a.action_low.dtype).reshape(-1) for v in (low, high))
        if low.shape != a.action_low.shape or high.shape != a.action_high.shape:
            raise ConfigError(f"action stats for {embodiment!r} must have {a.action_dim} entries, "
                              f"got low {tuple(low.shape)} and high {tuple(high.shape)}")
        a.action_low.copy_(low)
        a.action_high.copy_(torch.maximum(high, low + 1e-6))

    def set_proprio_stats(self, embodiment: str, mean: Any, std: Any) -> None:
        a = self.adapter(embodiment)
        mean, std = (torch.as_tensor(v, dtype=a.proprio_mean.dtype).reshape(-1) for v in (mean, std))
        if mean.shape != a.proprio_mean.shape or std.shape != a.proprio_std.shape:
            raise ConfigError(f"proprio stats for {embodiment!r} must have {a.proprio_dim} entries")
        a.proprio_mean.copy_(mean)
        a.proprio_std.copy_(std.clamp_min(1e-6))

    def set_video_delta_std(self, std: Any) -> None:
        """Per-channel scale of (future - last context) latents; only for `video_residual` models."""
        if not self.cfg.video_residual:
            raise ConfigError("set_video_delta_std needs a model with config key 'video_residual' = true")
        std = torch.as_tensor(std, dtype=self.video_delta_std.dtype).reshape(-1)
        if std.shape != self.video_delta_std.shape:
            raise ConfigError(f"video delta std must have {self.video_delta_std.numel()} entries (latent channels), "
                              f"got {tuple(std.shape)}")
        self.video_delta_std.copy_(std.clamp_min(1e-4))

    def video_to_model(self, future: Tensor, context: Tensor) -> Tensor:
        """Future frame latents -> the space the model generates in (identity, or scaled residuals)."""
        if not self.cfg.video_residual:
            return future
        return (future - context[:, -1:]) / self.video_delta_std.view(1, 1, -1, 1, 1).to(future.dtype)

    def video_from_model(self, x: Tensor, context: Tensor) -> Tensor:
        """Inverse of `video_to_model`: generated values -> future frame latents."""
        if not self.cfg.video_residual:
            return x
        return context[:, -1:] + x * self.video_delta_std.view(1, 1, -1, 1, 1).to(x.dtype)

    def normalize_actions(self, embodiment: str, actions: Tensor) -> Tensor:
        a = self.adapter(embodiment)
        return 2 * (actions - a.action_low) / (a.action_high - a.action_low) - 1

    def unnormalize_actions(self, embodiment: str, actions: Tensor) -> Tensor:
        a = self.adapter(embodiment)
        return (actions + 1) / 2 * (a.action_high - a.action_low) + a.action_low

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, *, embodiment: str, context: Tensor, future: Tensor | None = None,
                actions: Tensor | None = None, proprio: Tensor | None = None, text: Tensor | None = None,
                video_t: Tensor | None = None, action_t: Tensor | None = None,
                video_present: Tensor | None = None, action_present: Tensor | None = None,
                text_present: Tensor | None = None, proprio_present: Tensor | None = None) -> ModelOutput:
        """One pass. `future`/`actions` are noised inputs at times `video_t`/`action_t` (B,), actions normalized,
        future in the model's video space (see `video_to_model`).

        A modality passed as None is absent for the whole batch; the `*_present` masks (B,) bool make it absent
        per example (its values are then never read). `text`/`proprio` None or masked -> null / absent token.
        """
        cfg, ad = self.cfg, self.adapter(embodiment)
        B, dev = context.shape[0], context.device
        C, Fr, A, H = cfg.context_frames, cfg.future_frames, ad.action_dim, cfg.action_horizon
        d, p = cfg.d_model, cfg.patch_size
        if tuple(context.shape[1:]) != (C, *cfg.latent_shape):
            raise ConfigError(f"context has shape {tuple(context.shape)} but the model expects "
                              f"(B, {C}, {', '.join(map(str, cfg.latent_shape))}); "
                              "check the tokenizer / context_frames")
        full = lambda m, like: torch.full((B,), like, dtype=torch.bool, device=dev) if m is None else m  # noqa: E731
        zeros = torch.zeros(B, device=dev)
        video_present = full(video_present, future is not None)
        action_present = full(action_present, actions is not None)
        text_present = full(text_present, text is not None)
        proprio_present = full(proprio_present, proprio is not None)
        video_t = zeros if video_t is None else video_t
        action_t = zeros if action_t is None else action_t
        sel = lambda m, x, alt: torch.where(m.view(B, *([1] * (x.dim() - 1))), x, alt)  # noqa: E731

        # special tokens: embodiment, instruction (or null), proprio (or absent), readout
        tok_txt = self.null_text.expand(B, d)
        if text is not None:
            tok_txt = sel(text_present, self.text_proj(text), tok_txt)
        tok_prop = self.absent_proprio.expand(B, d)
        if proprio is not None:
            if proprio.shape[-1] != ad.proprio_dim:
                raise ConfigError(f"proprio has dim {proprio.shape[-1]} but embodiment {embodiment!r} expects "
                                  f"{ad.proprio_dim}")
            z = ((proprio - ad.proprio_mean) / ad.proprio_std).to(ad.proprio_in[0].weight.dtype)  # fp32 stats
            tok_prop = sel(proprio_present, ad.proprio_in(z), tok_prop)
        special = torch.stack([ad.token.expand(B, d), tok_txt, tok_prop, self.readout.expand(B, d)], 1)
        special = special + self.special_pos

        # frame patches: context (always clean) and future (noised, clean or absent)
        pos = (self.frame_pos[:, None] + self.patch_pos[None]).reshape(-1, d)  # ((C+F)*T_p, d)
        n_ctx = C * cfg.tokens_per_frame
        tok_ctx = self.patch_in(patchify(context, p)) + pos[:n_ctx]
        tok_fut = self.absent_video.expand(B, Fr * cfg.tokens_per_frame, d)
        if future is not None:
            if tuple(future.shape[1:]) != (Fr, *cfg.latent_shape):
                raise ConfigError(f"future has shape {tuple(future.shape)}, expected (B, {Fr}, ...latent_shape)")
            tok_fut = sel(video_present, self.patch_in(patchify(future, p)), tok_fut)
        tok_fut = tok_fut + pos[n_ctx:]

        # action tokens
        tok_act = self.absent_action.expand(B, cfg.action_tokens, d)
        if actions is not None:
            if tuple(actions.shape[1:]) != (H, A):
                raise ConfigError(f"actions have shape {tuple(actions.shape)} but embodiment {embodiment!r} "
                                  f"expects (B, {H}, {A})")
            tok_in = actions.reshape(B, cfg.action_tokens, cfg.actions_per_token * A)  # B may be 0
            tok_act = sel(action_present, ad.action_in(tok_in), tok_act)
        tok_act = tok_act + self.action_pos

        # one conditioning vector per token group and example
        c_vid = sel(video_present, self.time_embedding(video_t), self.absent_cond[0].expand(B, d))
        c_act = sel(action_present, self.time_embedding(action_t), self.absent_cond[1].expand(B, d))
        c_cond = torch.zeros_like(c_vid) if cfg.backbone == "native" else self.time_embedding(zeros)  # clean
        cond = torch.stack([c_cond, c_vid, c_act], 1) + self.group_emb  # (B, 3, d)

        x = torch.cat([special, tok_ctx, tok_fut, tok_act], 1) + cond[:, self.group]
        x = self.run_trunk(x, cond, special)
        shift, scale = self.final_ada(F.silu(cond))[:, self.group].chunk(2, dim=-1)
        y = modulate(self.final_norm(x), shift, scale)

        n_fut = Fr * cfg.tokens_per_frame
        video = unpatchify(self.video_out(y[:, 4 + n_ctx: 4 + n_ctx + n_fut]), Fr, cfg.latent_shape, p)
        act = ad.action_out(y[:, 4 + n_ctx + n_fut:]).reshape(B, H, A)
        head = self.head(self.head_norm(x[:, 3]))
        return ModelOutput(video=video, actions=act, success_logit=head[:, 0], progress=torch.sigmoid(head[:, 1]))

    def time_embedding(self, t: Tensor) -> Tensor:
        """Flow times (B,) in [0, 1] -> (B, d): flexwm's sinusoid + MLP, or the diffusers backbone's own."""
        dtype = self.patch_in.weight.dtype
        if self.cfg.backbone == "native":
            return self.time_mlp(timestep_embedding(t, 256).to(dtype))
        return self.trunk.time_embedding(t).to(dtype)

    def run_trunk(self, x: Tensor, cond: Tensor, special: Tensor) -> Tensor:
        """The transformer blocks over all N tokens, each modulated by its group's conditioning vector."""
        if self.cfg.backbone == "native":
            for block in self.blocks:
                if self.gradient_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, cond, self.group, use_reentrant=False)
                else:
                    x = block(x, cond, self.group)
            return x
        cfg = self.cfg
        _, h, w = cfg.latent_shape
        grid = (cfg.context_frames + cfg.future_frames, h // cfg.patch_size, w // cfg.patch_size)
        rotary = self.trunk.rotary(4, grid, cfg.action_tokens, x.device)
        # cross-attention reads the embodiment, instruction and proprio tokens (where Wan reads its text)
        return self.trunk(x, cond, self.group, special[:, :3], rotary)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model.safetensors + config.json (each atomically) into `directory`."""
        save_pretrained_dir(Path(directory), self.state_dict(), to_dict(self.cfg))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> FlexWorldModel:
        """Load a checkpoint written by `save_pretrained` (safetensors only; pickle files are refused)."""
        from flexwm.runs import find_latest, is_exported, resolve_model_dir

        directory = Path(directory)
        if is_exported(directory) or (not (directory / "model.safetensors").exists()
                                      and find_latest(directory) is not None):
            directory = resolve_model_dir(directory)  # a run (its newest checkpoint) or an exported folder
        data, state = load_pretrained_dir(directory, "world-model")
        if isinstance(data.get("model"), dict) and "latent_shape" in data["model"]:
            data = data["model"]  # a training checkpoint: config.json is the whole run config
        model = cls(from_dict(WorldModelConfig, data))
        check_state_dict(model.state_dict(), state, directory / "model.safetensors", "world-model")
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
