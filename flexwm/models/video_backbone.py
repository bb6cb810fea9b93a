"""A diffusers video diffusion transformer as the trunk of the flexible world model (`model.backbone=diffusers:wan`).

flexwm keeps its own token sequence (embodiment, instruction, proprio and readout tokens, context and future frame
patches, action tokens), its per-group flow times, absent tokens, heads and embodiment adapters; only the stack
of transformer blocks in the middle is the diffusers model's. For Wan (`WanTransformer3DModel`) that is close to how
Wan 2.2 TI2V conditions on a clean first frame, so the pretrained parts keep their meaning:

* each token group (condition / video / action) gets a time embedding from Wan's own `time_embedder` at
  1000 * t (the clean condition group at t = 0; an absent group a learned vector instead), projected by Wan's
  `time_proj` into the six shift/scale/gate vectors of every block and gathered per token (Wan's per-token
  `temb` path, shape (B, N, 6, d));
* frame patches get Wan's 3-D rotary position embedding over (frame, row, column); the special and action tokens
  get none (identity rotation) and keep flexwm's learned position embeddings;
* the cross-attention of every block reads the embodiment, instruction and proprio tokens (Wan reads its T5 text
  features there);
* with a pretrained checkpoint whose latent channels and patch size match the frame tokenizer (e.g. Wan's own VAE,
  `tokenizer.kind=diffusers:wan`), flexwm's patch projection and video output start from Wan's `patch_embedding`
  and `proj_out`.

Wan's own patch embedding, text embedder and output layer stay in the module (so the trunk is still a complete
diffusers model) but are frozen and unused unless copied as above.

Fine-tuning (`model.trunk_finetune`): `full` trains everything; `partial` freezes the trunk except the blocks
listed in `model.trunk_blocks` (default: the last one) and the time embedding; `lora` freezes the trunk and adds
LoRA adapters (peft, through diffusers' `add_adapter`) of rank `model.lora_rank` to the attention and
feed-forward projections of every block. flexwm's own projections, heads and adapters always train.

Weights are read from a local folder only (`from_pretrained(..., local_files_only=True)`): a folder written by
`WanTransformer3DModel.save_pretrained`, or a whole diffusers pipeline folder downloaded ahead of time (its
`transformer/` subfolder is used). A flexwm checkpoint holds the whole trunk, so loading one needs no network and
not the original folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flexwm.errors import ConfigError

# backbone name -> diffusers class name; every entry is tested with a tiny random configuration
BACKBONES = {"diffusers:wan": "WanTransformer3DModel"}
FINETUNE_MODES = ("full", "partial", "lora")
# tiny random configurations of the real classes, as diffusers tests its own models (CPU, seconds)
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "diffusers:wan": dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=16, in_channels=4,
                          out_channels=4, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
                          qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
}
# config keys of a diffusers class that flexwm's trunk cannot use (an image-to-video checkpoint)
_UNSUPPORTED = {"image_dim": "an image-to-video checkpoint (image_dim set)",
                "added_kv_proj_dim": "an image-to-video checkpoint (added_kv_proj_dim set)"}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")


def require_diffusers(what: str = "model.backbone=diffusers:*") -> Any:
    try:
        import diffusers
    except ImportError as e:
        raise ConfigError(f"{what} needs the diffusers package; install it with pip install 'flexwm[video]'") from e
    return diffusers


def pretrained_subfolder(path: str | Path, component: str) -> tuple[Path, str | None]:
    """(folder, subfolder) of a diffusers component: a folder saved by the component itself, or a pipeline folder
    (model_index.json + one folder per component, as downloaded from the hub) holding it under `component/`."""
    path = Path(path).expanduser()
    if (path / "config.json").exists():
        return path, None
    if (path / component / "config.json").exists():
        return path, component
    raise ConfigError(f"{path} holds no diffusers {component}: expected {path}/config.json (a folder written by "
                      f"save_pretrained) or {path}/{component}/config.json (a pipeline folder downloaded ahead of "
                      "time, e.g. huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --local-dir DIR)")


def read_backbone_config(path: str | Path, component: str = "transformer") -> dict[str, Any]:
    """The diffusers config.json of a local component folder, without its private `_` keys."""
    folder, sub = pretrained_subfolder(path, component)
    data = json.loads(((folder / sub) if sub else folder).joinpath("config.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def trunk_shape(backbone: str, config: dict[str, Any]) -> dict[str, int]:
    """The flexwm config keys a backbone's diffusers config fixes: d_model, n_heads, n_layers and patch_size
    (the backbone's spatial patch, so its patch embedding and output layer can start flexwm's)."""
    check_backbone(backbone, config)
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    return {"d_model": heads * head_dim, "n_heads": heads, "n_layers": int(config["num_layers"]),
            "patch_size": int(list(config.get("patch_size", [1, 2, 2]))[1])}


def check_backbone(backbone: str, config: dict[str, Any]) -> None:
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; choose native or one of {list(BACKBONES)}")
    missing = [k for k in ("num_attention_heads", "attention_head_dim", "num_layers") if k not in config]
    if missing:
        raise ConfigError(f"config key 'backbone_config' lacks {missing} of {BACKBONES[backbone]}; give "
                          "model.pretrained=DIR (its config.json is read) or the class's config")
    for key, what in _UNSUPPORTED.items():
        if config.get(key) is not None:
            raise ConfigError(f"backbone_config is {what}; flexwm conditions on frames itself, so use a "
                              "text-to-video checkpoint (e.g. Wan2.1-T2V-1.3B) instead")
    patch = list(config.get("patch_size", [1, 2, 2]))
    if patch[0] != 1 or patch[1] != patch[2]:
        raise ConfigError(f"backbone_config patch_size {patch}: flexwm needs a temporal patch of 1 and square "
                          "spatial patches")


def _rotary(freqs: Tensor, split: list[int], grid: tuple[int, int, int]) -> Tensor:
    """Wan's 3-D rotary table (T*h*w, head_dim) for a (frames, rows, columns) patch grid."""
    T, h, w = grid
    f, r, c = freqs.split(split, dim=1)
    return torch.cat([f[:T].view(T, 1, 1, -1).expand(T, h, w, -1), r[:h].view(1, h, 1, -1).expand(T, h, w, -1),
                      c[:w].view(1, 1, w, -1).expand(T, h, w, -1)], dim=-1).reshape(T * h * w, -1)


class DiffusersTrunk(nn.Module):
    """The blocks, time embedding and rotary embedding of a diffusers video transformer, run on flexwm's tokens.

    `cfg` is a WorldModelConfig with `backbone` in BACKBONES; `load_weights` reads `cfg.pretrained` (else the
    weights are random, e.g. before a checkpoint's state dict is loaded into them).
    """

    def __init__(self, cfg: Any, *, load_weights: bool = False):
        super().__init__()
        diffusers = require_diffusers()
        cls = getattr(diffusers, BACKBONES[cfg.backbone])
        if load_weights and cfg.pretrained:
            folder, sub = pretrained_subfolder(cfg.pretrained, "transformer")
            self.transformer = cls.from_pretrained(folder, subfolder=sub, local_files_only=True,
                                                   torch_dtype=torch.float32)
        else:
            self.transformer = cls.from_config(dict(cfg.backbone_config))
        self.transformer.requires_grad_(True)
        t = self.transformer
        self.dim = t.config.num_attention_heads * t.config.attention_head_dim
        if self.dim != cfg.d_model:
            raise ConfigError(f"the {BACKBONES[cfg.backbone]} at {cfg.pretrained} has width {self.dim} but "
                              f"config key 'd_model' = {cfg.d_model}; leave d_model to the backbone's config")
        # unused by flexwm's token sequence: kept so the trunk stays a complete diffusers model, never trained
        for m in (t.patch_embedding, t.condition_embedder.text_embedder, t.norm_out, t.proj_out):
            m.requires_grad_(False)
        t.scale_shift_table.requires_grad_(False)
        rope = t.rope
        self._split = [rope.t_dim, rope.h_dim, rope.w_dim]
        self.rope_len = rope.max_seq_len

    # -- fine-tuning modes -------------------------------------------------------------------------------
    def set_finetune(self, mode: str, blocks: list[int], lora_rank: int, lora_alpha: float) -> None:
        """Which trunk parameters train (see the module docstring). Called once, at construction."""
        t = self.transformer
        n = len(t.blocks)
        if mode == "full":
            return
        t.requires_grad_(False)
        if mode == "partial":
            chosen = blocks or [n - 1]
            bad = [b for b in chosen if not -n <= b < n]
            if bad:
                raise ConfigError(f"config key 'trunk_blocks' = {blocks}: blocks {bad} do not exist (the trunk "
                                  f"has {n}: 0..{n - 1}, or negative from the end)")
            for b in chosen:
                t.blocks[b].requires_grad_(True)
            t.condition_embedder.time_embedder.requires_grad_(True)
            t.condition_embedder.time_proj.requires_grad_(True)
        elif mode == "lora":
            try:
                from peft import LoraConfig
            except ImportError as e:
                raise ConfigError("model.trunk_finetune=lora needs the peft package; install it with "
                                  "pip install 'flexwm[video]'") from e
            # module-name suffixes inside the blocks (to_q matches attn1.to_q and attn2.to_q)
            t.add_adapter(LoraConfig(r=lora_rank, lora_alpha=lora_alpha, init_lora_weights=True,
                                     target_modules=list(LORA_TARGETS)))
        else:
            raise ConfigError(f"config key 'trunk_finetune' = {mode!r}; choose one of {list(FINETUNE_MODES)}")

    # -- pieces flexwm calls -------------------------------------------------------------------------------
    def time_embedding(self, t: Tensor) -> Tensor:
        """Flow time t in [0, 1] (B,) -> the backbone's time embedding (B, d) at timestep 1000 * t."""
        ce = self.transformer.condition_embedder
        freq = ce.timesteps_proj(t.float() * 1000.0)
        return ce.time_embedder(freq.to(next(ce.time_embedder.parameters()).dtype))

    def rotary(self, n_before: int, grid: tuple[int, int, int], n_after: int, device: torch.device
               ) -> tuple[Tensor, Tensor]:
        """(cos, sin), each (1, N, 1, head_dim): Wan's 3-D rotation for the frame patches in the middle, the
        identity for `n_before` leading and `n_after` trailing tokens."""
        if max(grid) > self.rope_len:
            raise ConfigError(f"the frame patch grid {grid} exceeds the backbone's rope_max_seq_len {self.rope_len}")
        rope = self.transformer.rope
        cos, sin = _rotary(rope.freqs_cos, self._split, grid), _rotary(rope.freqs_sin, self._split, grid)
        one, zero = torch.ones_like(cos[:1]), torch.zeros_like(sin[:1])
        cos = torch.cat([one.expand(n_before, -1), cos, one.expand(n_after, -1)])
        sin = torch.cat([zero.expand(n_before, -1), sin, zero.expand(n_after, -1)])
        return cos[None, :, None].to(device), sin[None, :, None].to(device)

    def forward(self, x: Tensor, cond: Tensor, group: Tensor, context_tokens: Tensor,
                rotary: tuple[Tensor, Tensor]) -> Tensor:
        """x (B, N, d) tokens; cond (B, G, d) one time embedding per token group; group (N,) each token's group;
        context_tokens (B, K, d) what cross-attention reads."""
        t = self.transformer
        ce = t.condition_embedder
        temb = ce.time_proj(ce.act_fn(cond)).unflatten(2, (6, -1))[:, group]  # (B, N, 6, d)
        for block in t.blocks:
            if torch.is_grad_enabled() and t.gradient_checkpointing:
                x = t._gradient_checkpointing_func(block, x, context_tokens, temb, rotary)
            else:
                x = block(x, context_tokens, temb, rotary)
        return x

    # -- starting flexwm's own layers from the pretrained ones ------------------------------------------------
    @torch.no_grad()
    def copy_patch_layers(self, patch_in: nn.Linear, video_out: nn.Linear, channels: int, patch: int) -> bool:
        """Copy Wan's patch embedding into `patch_in` and its output projection into `video_out` when the latent
        channels and patch size match; True if copied."""
        t = self.transformer
        pt, ph, pw = t.config.patch_size
        if (pt, ph, pw) != (1, patch, patch) or t.config.in_channels != channels or t.config.out_channels != channels:
            return False
        patch_in.weight.copy_(t.patch_embedding.weight.reshape(self.dim, -1))  # (c, 1, p, p) = patchify's order
        patch_in.bias.copy_(t.patch_embedding.bias)
        # proj_out rows are ordered (p_t, p_h, p_w, c); flexwm's unpatchify reads (c, p_h, p_w)
        w = t.proj_out.weight.reshape(patch, patch, channels, self.dim).permute(2, 0, 1, 3)
        video_out.weight.copy_(w.reshape(-1, self.dim))
        video_out.bias.copy_(t.proj_out.bias.reshape(patch, patch, channels).permute(2, 0, 1).reshape(-1))
        return True


def resolve_vae_config(cfg: Any) -> dict[str, Any]:
    """The VAE's diffusers config of a TokenizerConfig: `cfg.vae_config`, else read from `cfg.pretrained`."""
    if cfg.vae_config:
        return dict(cfg.vae_config)
    if cfg.pretrained:
        return read_backbone_config(cfg.pretrained, "vae")
    raise ConfigError(f"tokenizer.kind={cfg.kind} needs tokenizer.pretrained=DIR (a local diffusers VAE or pipeline "
                      "folder) or tokenizer.vae_config (the class's config)")
