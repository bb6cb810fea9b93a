"""A diffusers video VAE as flexwm's frame tokenizer (`tokenizer.kind=diffusers:wan`: `AutoencoderKLWan`).

Frames are encoded one at a time as one-frame videos (the causal VAE encodes a first frame alone, as Wan's
image-to-video pipelines do), to the posterior mean, normalised per channel with the VAE's own `latents_mean` /
`latents_std` (the normalisation Wan's pipelines apply before the transformer); `decode` inverts both. The VAE is
used frozen: a run saves its weights as `RUN/tokenizer/model.safetensors` + `config.json` like flexwm's own
tokenizer, so the run, its checkpoints and an exported folder load without the original folder or the network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flexwm.errors import ConfigError
from flexwm.models.tokenizer import PRETRAINED_TOKENIZERS, TOKENIZERS, FrameTokenizer, TokenizerConfig, to_model_input
from flexwm.models.video_backbone import pretrained_subfolder, require_diffusers, resolve_vae_config

VAES = {"diffusers:wan": "AutoencoderKLWan"}
# a tiny random AutoencoderKLWan (as diffusers' own tests build one): 64x64 frames -> 4 x 8 x 8 latents
TINY_VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "diffusers:wan": dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                          temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4),
}


class DiffusersVAETokenizer(FrameTokenizer):
    """FrameTokenizer over a diffusers video VAE, frozen. `load_weights` reads `config.pretrained`; otherwise the
    weights are random (before a saved tokenizer's state dict is loaded into them, or in tests)."""

    def __init__(self, config: TokenizerConfig, *, load_weights: bool = False):
        super().__init__()
        self.config = config
        config.vae_config = resolve_vae_config(config)
        cls = getattr(require_diffusers("tokenizer.kind=diffusers:*"), VAES[config.kind])
        if load_weights and config.pretrained:
            folder, sub = pretrained_subfolder(config.pretrained, "vae")
            self.vae = cls.from_pretrained(folder, subfolder=sub, local_files_only=True, torch_dtype=torch.float32)
        else:
            self.vae = cls.from_config(dict(config.vae_config))
        self.vae.requires_grad_(False)
        z = config.latent_channels
        mean, std = self.vae.config.get("latents_mean"), self.vae.config.get("latents_std")
        ok = mean is not None and std is not None and len(mean) == len(std) == z
        self.register_buffer("latent_shift", torch.tensor(mean if ok else [0.0] * z).view(1, z, 1, 1))
        self.register_buffer("latent_scale", torch.tensor(std if ok else [1.0] * z).view(1, z, 1, 1))

    def latent_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        d = self.config.downsample
        if h % d or w % d:
            raise ConfigError(f"image size {(h, w)} is not a multiple of the VAE's downsample factor {d}; "
                              "collect or resize frames to a multiple of it (--resize)")
        return self.config.latent_channels, h // d, w // d

    @torch.no_grad()
    def encode(self, frames: Any) -> Tensor:
        x = to_model_input(frames).to(device=self.device, dtype=self.dtype)
        mean = self.vae.encode(x[:, :, None]).latent_dist.mean[:, :, 0]  # each frame a one-frame video
        return (mean - self.latent_shift) / self.latent_scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        z = latents.to(device=self.device, dtype=self.dtype) * self.latent_scale + self.latent_shift
        return self.vae.decode(z[:, :, None]).sample[:, :, 0].clamp(-1, 1)


# the diffusers kinds of tokenizer.kind (flexwm.models.tokenizer looks them up; flexwm.models imports this module)
for _kind in VAES:
    TOKENIZERS[_kind] = DiffusersVAETokenizer
    PRETRAINED_TOKENIZERS[_kind] = lambda cfg: DiffusersVAETokenizer(cfg, load_weights=True)
