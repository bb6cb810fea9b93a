"""Load a world model as the narrow `WorldModel` interface for planning, RL and evaluation: from a training run,
a checkpoint directory or an exported model folder (`flexwm export`)."""

from __future__ import annotations

from pathlib import Path

import torch

from flexwm.models.interface import FlexWorldModelWrapper


def load_run(path: str | Path, *, embodiment: str | None = None, device: str = "cpu", steps: int = 10,
             cfg_scale: float = 1.0, dtype: torch.dtype | None = None,
             ac_noise: str = "sample", ac_guidance: float = 1.0,
             prefer_embodiment: str | None = None) -> FlexWorldModelWrapper:
    """A run directory (its latest checkpoint), a checkpoint directory or an exported folder -> adapter.

    `embodiment` picks the adapter; None means the checkpoint's only one, or `prefer_embodiment` when it knows
    several. A run's frame tokenizer is read from RUN/tokenizer (or the run config's `tokenizer_path`) and its
    text cache from RUN/text_cache.safetensors; an exported folder holds both. Asking for a device this machine
    lacks (cuda without a GPU) is a clear ConfigError.
    """
    return FlexWorldModelWrapper.from_pretrained(
        path, embodiment=embodiment, prefer_embodiment=prefer_embodiment, device=device, dtype=dtype, steps=steps,
        cfg_scale=cfg_scale, ac_noise=ac_noise, ac_guidance=ac_guidance)


def export(src: str | Path, out: str | Path) -> Path:
    """`flexwm export`: the model at `src` as one self-contained folder `out` (see flexwm.models.pretrained)."""
    from flexwm.models.pretrained import export_model

    return export_model(src, out)
