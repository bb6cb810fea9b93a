"""Frame tokenizer: uint8 frames <-> small latent grids that the world model trains on.

`FrameTokenizer` is the interface the rest of flexwm depends on (a pretrained encoder can replace the
default later): `encode` is deterministic (the posterior mean for a VAE) and returns latents normalised to
roughly zero mean / unit variance per channel; `decode` inverts it to float images in [-1, 1].

`ConvAutoencoder` is the default implementation: a small convolutional VAE (GroupNorm + SiLU residual blocks,
stride-2 convolutions down, nearest-neighbour + conv up) trained with MSE plus a small KL term. After training
the per-channel mean and std of the posterior means on data are stored as buffers (`latent_shift`,
`latent_scale`, as diffusers' `scaling_factor`) so the latents have roughly unit variance.

Checkpoint layout (`save_pretrained` / `from_pretrained`): `model.safetensors` + `config.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexwm.config import field, from_dict, to_dict, validate
from flexwm.errors import ConfigError
from flexwm.io import check_state_dict, load_pretrained_dir, save_pretrained_dir


@dataclass
class TokenizerConfig:
    kind: str = field("conv_vae", choices=("conv_vae", "diffusers:wan"),
                      help="conv_vae = flexwm's VAE, trained per run; diffusers:wan = AutoencoderKLWan, used frozen")
    patch_size: int = field(4, choices=(1, 2, 4, 8), help="pixel-(un)shuffle stem: first p x downsampling is free")
    channels: list[int] = field(default_factory=lambda: [48, 96],
                                help="width per level; downsample = patch_size * 2 ** (len(channels) - 1)")
    res_blocks: list[int] = field(default_factory=lambda: [1, 1],
                                  help="residual blocks per level (level 0 is image_size / patch_size)")
    mid_blocks: int = field(1, ge=0, help="residual blocks at the latent resolution")
    latent_channels: int = field(4, ge=1, le=64)
    norm_groups: int = field(8, ge=1, help="GroupNorm groups; must divide every width")
    variational: bool = field(True, help="VAE (posterior mean at encode time) or a plain autoencoder")
    kl_weight: float = field(1e-4, ge=0.0, help="weight of the per-element mean KL next to the pixel MSE")
    image_size: int = field(64, ge=8, help="nominal frame size (any multiple of the downsample factor works)")
    pretrained: str | None = field(
        None, help="diffusers kinds: local folder of the VAE (save_pretrained output or a downloaded pipeline)")
    vae_config: dict[str, Any] = field(
        default_factory=dict, help="diffusers kinds: the VAE class's config (read from `pretrained` when empty)")

    def __post_init__(self) -> None:
        validate(self)
        if self.kind != "conv_vae":  # a diffusers VAE (flexwm.models.video_vae): its config fixes the latents
            if self.pretrained or self.vae_config:
                from flexwm.models.video_backbone import resolve_vae_config

                self.vae_config = resolve_vae_config(self)
                self.latent_channels = int(self.vae_config.get("z_dim", 16))
                if self.image_size % self.downsample:
                    raise ConfigError(f"config key 'image_size' = {self.image_size} is not a multiple of the VAE's "
                                      f"spatial downsample factor {self.downsample}")
            return
        if not self.channels:
            raise ConfigError("config key 'channels' is empty; give one width per resolution level")
        if len(self.res_blocks) != len(self.channels):
            raise ConfigError(f"config key 'res_blocks' has {len(self.res_blocks)} entries but 'channels' has "
                              f"{len(self.channels)}; give one block count per level")
        if any(c < 1 for c in self.channels) or any(b < 0 for b in self.res_blocks):
            raise ConfigError(f"config keys 'channels' {self.channels} / 'res_blocks' {self.res_blocks} must be "
                              "positive / non-negative")
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ConfigError(f"config key 'norm_groups' = {self.norm_groups} does not divide widths {bad} "
                              f"of 'channels'; use multiples of {self.norm_groups}")
        if self.image_size % self.downsample:
            raise ConfigError(f"config key 'image_size' = {self.image_size} is not a multiple of the "
                              f"downsample factor {self.downsample} (= patch_size * 2 ** (len(channels) - 1))")

    @property
    def downsample(self) -> int:
        if self.kind != "conv_vae":
            return int(self.vae_config.get("scale_factor_spatial") or 8)
        return self.patch_size * 2 ** (len(self.channels) - 1)


PRESETS: dict[str, dict[str, Any]] = {
    # tests: ~25k parameters, overfits a few frames in seconds; 64x64 -> 4x8x8
    "tiny": dict(patch_size=4, channels=[16, 32], res_blocks=[0, 1], mid_blocks=0, latent_channels=4,
                 norm_groups=4),
    # this machine (2 CPU cores): 64x64 -> 4x8x8, 0.9M parameters; in a fixed CPU time budget it beat wider
    # patch-2 and patch-4 variants (1.5M parameters) on held-out Meta-World frames
    "cpu": dict(patch_size=4, channels=[48, 96], res_blocks=[1, 1], mid_blocks=1, latent_channels=4),
    # an accelerator: wider and deeper (untuned); 4 latent channels to match the world-model presets
    "gpu": dict(patch_size=2, channels=[64, 128, 256], res_blocks=[1, 2, 2], mid_blocks=2, latent_channels=4,
                norm_groups=32),
}


def preset(name: str, **overrides: Any) -> TokenizerConfig:
    """A named preset (tiny / cpu / gpu) with keyword overrides, strictly checked."""
    if name not in PRESETS:
        raise ConfigError(f"unknown tokenizer preset {name!r}; choose one of {list(PRESETS)}")
    return from_dict(TokenizerConfig, {**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------------------------------------
# interface


def to_model_input(frames: Any) -> Tensor:
    """uint8 (N, H, W, 3) / (N, 3, H, W) or float (N, 3, H, W) in [-1, 1] -> float (N, 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(frames)
    if x.dim() != 4:
        raise ValueError(f"frames must be 4-D (N, H, W, 3) uint8 or (N, 3, H, W) float, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        elif x.shape[1] != 3:
            raise ValueError(f"uint8 frames must be (N, H, W, 3) or (N, 3, H, W), got {tuple(x.shape)}")
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"frames must be uint8 or float in [-1, 1], got dtype {x.dtype}")
    if x.shape[1] != 3:
        raise ValueError(f"float frames must be channels-first (N, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
    return x


class FrameTokenizer(nn.Module):
    """Interface: frames <-> latents (N, c, h, w). Subclasses set `self.config` and implement the methods."""

    config: Any

    def latent_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        raise NotImplementedError

    def encode(self, frames: Any) -> Tensor:
        """Frames (see `to_model_input`) -> normalised latents (N, c, h, w); deterministic."""
        raise NotImplementedError

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (N, c, h, w) -> float images (N, 3, H, W), roughly in [-1, 1]."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model.safetensors + config.json (each atomically) into `directory`."""
        save_pretrained_dir(Path(directory), self.state_dict(), to_dict(self.config))

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, expected: TokenizerConfig | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> FrameTokenizer:
        """Load a `save_pretrained` directory (safetensors only). With `expected`, the stored config must equal it."""
        directory = Path(directory)
        data, state = load_pretrained_dir(directory, "tokenizer")
        cfg = from_dict(TokenizerConfig, data)
        if expected is not None and to_dict(expected) != to_dict(cfg):
            diff = {k: (v, to_dict(cfg)[k]) for k, v in to_dict(expected).items() if to_dict(cfg)[k] != v}
            raise ConfigError(f"tokenizer checkpoint {directory} does not match the expected config: "
                              + ", ".join(f"{k}: expected {a!r}, checkpoint has {b!r}" for k, (a, b) in diff.items())
                              + "; pass the checkpoint's config or retrain the tokenizer")
        model = TOKENIZERS[cfg.kind](cfg)
        check_state_dict(model.state_dict(), state, directory / "model.safetensors", "tokenizer")
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype).eval()

    def fingerprint(self) -> str:
        """sha256 (hex, 16 chars) of the config and every weight/buffer: identifies cached latents."""
        # optional fields left unset (None, {}) are not hashed, so adding one to the config later keeps the
        # fingerprints, and so the latent caches, of tokenizers saved before it
        cfg = {k: v for k, v in to_dict(self.config).items() if v is not None and v != {}}
        h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(str(v.dtype).encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


# ----------------------------------------------------------------------------------------------------------
# the conv VAE


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.patch = cfg.patch_size
        self.conv_in = nn.Conv2d(3 * self.patch ** 2, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, c in enumerate(ch):
            layers += [ResBlock(c, c, g) for _ in range(cfg.res_blocks[i])]
            if i + 1 < len(ch):
                layers.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))
        layers += [ResBlock(ch[-1], ch[-1], g) for _ in range(cfg.mid_blocks)]
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, ch[-1])
        out = cfg.latent_channels * (2 if cfg.variational else 1)
        self.conv_out = nn.Conv2d(ch[-1], out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(ch[-1], ch[-1], g) for _ in range(cfg.mid_blocks)]
        for i in reversed(range(len(ch))):
            layers += [ResBlock(ch[i], ch[i], g) for _ in range(cfg.res_blocks[i])]
            if i > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, ch[0])
        self.patch = cfg.patch_size
        self.conv_out = nn.Conv2d(ch[0], 3 * self.patch ** 2, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))
        return F.pixel_shuffle(x, self.patch) if self.patch > 1 else x


class ConvAutoencoder(FrameTokenizer):
    """Small conv VAE / AE. `encode`/`decode` work on normalised latents; `encode_dist` on raw ones."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        c = config.latent_channels
        self.register_buffer("latent_shift", torch.zeros(c))
        self.register_buffer("latent_scale", torch.ones(c))

    def latent_shape(self, image_size: int | tuple[int, int]) -> tuple[int, int, int]:
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        d = self.config.downsample
        if h % d or w % d:
            raise ConfigError(f"image size {(h, w)} is not a multiple of the tokenizer's downsample factor {d}; "
                              "resize the frames or use a tokenizer with fewer levels")
        return (self.config.latent_channels, h // d, w // d)

    def _input(self, frames: Any) -> Tensor:
        x = to_model_input(frames)
        self.latent_shape(tuple(x.shape[-2:]))
        return x.to(device=self.device, dtype=self.dtype)

    def encode_dist(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Float (N, 3, H, W) in [-1, 1] -> raw (unnormalised) posterior mean and log-variance (None for an AE)."""
        h = self.encoder(x)
        if not self.config.variational:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def _norm(self, z: Tensor) -> Tensor:
        return (z - self.latent_shift[:, None, None]) / self.latent_scale[:, None, None]

    def _denorm(self, z: Tensor) -> Tensor:
        return z * self.latent_scale[:, None, None] + self.latent_shift[:, None, None]

    def encode(self, frames: Any) -> Tensor:
        return self._norm(self.encode_dist(self._input(frames))[0])

    def decode(self, latents: Tensor) -> Tensor:
        z = torch.as_tensor(latents).to(device=self.device, dtype=self.dtype)
        return self.decode_raw(self._denorm(z))

    @torch.no_grad()
    def fit_latent_stats(self, frames: Any, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """Set `latent_shift`/`latent_scale` to the per-channel mean/std of posterior means on `frames`."""
        frames = np.asarray(frames) if not torch.is_tensor(frames) else frames
        s1 = s2 = None
        n = 0
        for i in range(0, len(frames), batch_size):
            z = self.encode_dist(self._input(frames[i:i + batch_size]))[0].double()
            zs = z.transpose(0, 1).reshape(z.shape[1], -1)
            s1 = zs.sum(1) if s1 is None else s1 + zs.sum(1)
            s2 = (zs ** 2).sum(1) if s2 is None else s2 + (zs ** 2).sum(1)
            n += zs.shape[1]
        if n == 0:
            raise ValueError("fit_latent_stats needs at least one frame")
        mean = s1 / n
        std = (s2 / n - mean ** 2).clamp_min(1e-12).sqrt()
        self.latent_shift.copy_(mean.to(self.latent_shift))
        self.latent_scale.copy_(std.clamp_min(1e-6).to(self.latent_scale))
        return self.latent_shift.clone(), self.latent_scale.clone()


# tokenizer.kind -> class; flexwm.models.video_vae adds the diffusers kinds (and how to load their pretrained
# weights) when flexwm.models is imported
TOKENIZERS: dict[str, Any] = {"conv_vae": ConvAutoencoder}
PRETRAINED_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(cfg: TokenizerConfig) -> FrameTokenizer:
    """A tokenizer that needs no training here: a diffusers VAE read from `cfg.pretrained` (random weights from
    `cfg.vae_config` without one, for tests)."""
    if cfg.kind == "conv_vae":
        raise ConfigError("the conv_vae tokenizer is trained per run; use train_tokenizer (tokenizer.pretrained "
                          "is for tokenizer.kind=diffusers:wan)")
    return PRETRAINED_TOKENIZERS[cfg.kind](cfg).eval()


def make_tokenizer(cfg: TokenizerConfig | str, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None,
                   seed: int | None = None) -> FrameTokenizer:
    """Build a freshly initialised tokenizer (a preset name or a config); init is seeded by `seed`."""
    cfg = preset(cfg) if isinstance(cfg, str) else cfg
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        elif generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        model = TOKENIZERS[cfg.kind](cfg)
    return model.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# training and evaluation


def frames_array(source: Any, *, max_frames: int | None = None, frame_stride: int = 1) -> np.ndarray:
    """uint8 (N, H, W, 3) from an array, a list of per-episode arrays, or a dataset with `load_episode(i)`."""
    if hasattr(source, "load_episode"):
        chunks, n = [], 0
        for i in range(len(source)):
            chunks.append(np.asarray(source.load_episode(i).frames)[::frame_stride])
            n += len(chunks[-1])
            if max_frames is not None and n >= max_frames:
                break
    elif isinstance(source, (list, tuple)):
        chunks = [np.asarray(f)[::frame_stride] for f in source]
    else:
        chunks = [np.asarray(torch.as_tensor(source).cpu().numpy() if torch.is_tensor(source) else source)
                  [::frame_stride]]
    arr = np.concatenate([c.reshape(-1, *c.shape[-3:]) for c in chunks]) if chunks else np.zeros((0,))
    if arr.ndim != 4 or arr.dtype != np.uint8 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"tokenizer training needs uint8 frames (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr[:max_frames] if max_frames is not None else arr


def psnr(x: Tensor, y: Tensor) -> float:
    """PSNR in dB between two image batches in [-1, 1], on the uint8 scale (peak 255)."""
    a = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
    b = ((y.float().clamp(-1, 1) + 1) * 127.5).round()
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


@torch.no_grad()
def evaluate_psnr(tokenizer: FrameTokenizer, frames: Any, *, batch_size: int = 256) -> float:
    """Reconstruction PSNR (dB, uint8 scale, MSE pooled over all pixels) of encode -> decode -> uint8."""
    arr = frames_array(frames)
    was_training = tokenizer.training
    tokenizer.eval()
    se, n = 0.0, 0
    for i in range(0, len(arr), batch_size):
        x = torch.from_numpy(arr[i:i + batch_size])
        rec = tokenizer.decode(tokenizer.encode(x)).float().cpu()
        rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1)
        se += float(((rec - x.float()) ** 2).sum())
        n += x.numel()
    tokenizer.train(was_training)
    mse = se / n
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def tokenizer_loss(model: ConvAutoencoder, x: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """MSE of the reconstruction (from a posterior sample for a VAE) + kl_weight * per-element mean KL."""
    mean, logvar = model.encode_dist(x)
    if logvar is None:
        z, kl = mean, torch.zeros((), device=x.device)
    else:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    mse = F.mse_loss(model.decode_raw(z).float(), x.float())
    loss = mse + model.config.kl_weight * kl.float()
    return loss, {"mse": mse.detach(), "kl": kl.detach()}


def train_tokenizer(frames: Any, cfg: TokenizerConfig | str, *, steps: int = 2000, batch_size: int = 64,
                    lr: float = 2e-3, weight_decay: float = 0.0, warmup: int = 100, device: str | torch.device = "cpu",
                    seed: int = 0, generator: torch.Generator | None = None, max_seconds: float | None = None,
                    max_frames: int | None = 200_000, tokenizer: ConvAutoencoder | None = None,
                    progress: bool = True, log_fn: Callable[[dict], None] | None = None, log_every: int = 50,
                    ) -> tuple[ConvAutoencoder, dict[str, Any]]:
    """Train a tokenizer on uint8 frames (array, list of episodes or dataset with `load_episode`).

    AdamW with linear warmup and cosine decay to 10 %; the schedule follows max(step / steps, elapsed /
    max_seconds), so a time-bounded run still anneals. No augmentation (flips would break the fixed scene
    layout). Batches are drawn with `generator` (or one seeded by `seed`); with `max_seconds` the number of
    steps depends on the machine. Afterwards latent normalisation stats are fitted on up to 4096 frames.
    Returns (tokenizer in eval mode, metrics).
    """
    device = torch.device(device)
    cfg = preset(cfg) if isinstance(cfg, str) else cfg
    data = frames_array(frames, max_frames=max_frames)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    if tokenizer is not None and to_dict(tokenizer.config) != to_dict(cfg):
        raise ConfigError("train_tokenizer got a tokenizer whose config differs from cfg; pass tokenizer.config")
    model = tokenizer if tokenizer is not None else make_tokenizer(cfg, device=device, generator=gen)
    model.to(device).train()
    noise_gen = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    amp = device.type == "cuda"
    data_t = torch.from_numpy(data)
    bar = None
    if progress:
        from flexwm.metrics import progress_bar

        bar = progress_bar(steps, "tokenizer", leave=False)
    t0, step, history = time.perf_counter(), 0, []
    while step < steps:
        elapsed = time.perf_counter() - t0
        if max_seconds is not None and elapsed >= max_seconds:
            break
        frac = max(step / steps, elapsed / max_seconds if max_seconds else 0.0)
        scale = min(1.0, (step + 1) / max(1, warmup)) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        idx = torch.randint(0, len(data_t), (batch_size,), generator=gen)
        x = (data_t[idx].to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, parts = tokenizer_loss(model, x, noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % log_every == 0 or step == steps:
            mse = float(parts["mse"])
            rec = {"step": step, "loss": float(loss.detach()), "mse": mse, "kl": float(parts["kl"]),
                   "psnr_batch": 10 * math.log10(4.0 / max(mse, 1e-12)), "lr": lr * scale,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if log_fn is not None:
                log_fn(rec)
            if bar is not None:
                bar.set_postfix(psnr=f"{rec['psnr_batch']:.1f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    model.eval()
    sel = torch.randperm(len(data), generator=gen)[:4096].numpy()
    shift, scale_ = model.fit_latent_stats(data[np.sort(sel)])
    metrics = {"steps": step, "seconds": seconds, "images_per_s": step * batch_size / max(seconds, 1e-9),
               "train_frames": len(data), "final_mse": history[-1]["mse"] if history else None,
               "latent_shift": shift.tolist(), "latent_scale": scale_.tolist(),
               "parameters": sum(p.numel() for p in model.parameters()), "history": history}
    return model, metrics
