"""Load a training run (or a checkpoint directory) as a `WorldModel` for planning, RL and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flexwm.config import from_dict
from flexwm.errors import ConfigError
from flexwm.models.interface import FlexWorldModelWrapper
from flexwm.runs import resolve_model_dir, resolve_run_dir


def load_run(path: str | Path, *, embodiment: str | None = None, device: str = "cpu", steps: int = 10,
             cfg_scale: float = 1.0, dtype: torch.dtype | None = None,
             ac_noise: str = "sample", ac_guidance: float = 1.0,
             prefer_embodiment: str | None = None) -> FlexWorldModelWrapper:
    """A run directory (its latest checkpoint) or a checkpoint directory -> FlexWorldModelWrapper.

    `embodiment` picks the adapter; None means the checkpoint's only one, or `prefer_embodiment` when it knows
    several. The frame tokenizer is read from RUN/tokenizer (or the run config's `tokenizer_path`), the text encoder is
    rebuilt from the run config, with RUN/text_cache.safetensors as its cache.
    """
    from flexwm.models import text as text_mod
    from flexwm.models.tokenizer import ConvAutoencoder
    from flexwm.models.world_model import FlexWorldModel
    from flexwm.training.run import RunConfig

    ckpt = resolve_model_dir(path)
    run_dir = resolve_run_dir(path)
    cfg = from_dict(RunConfig, json.loads((ckpt / "config.json").read_text()))
    model = FlexWorldModel.from_pretrained(ckpt, device=device, dtype=dtype).eval()
    names = list(model.cfg.embodiments)
    if embodiment is None and len(names) > 1 and prefer_embodiment is not None:
        embodiment = prefer_embodiment  # e.g. the simulator's, for a model fine-tuned to a new embodiment
    if embodiment is None:
        if len(names) > 1:
            raise ConfigError(f"{path} was trained on embodiments {names}; pass embodiment= to choose one")
        embodiment = names[0]
    elif embodiment not in names:
        raise ConfigError(f"{path} knows embodiments {names}, not {embodiment!r}; fine-tune its adapters first "
                          "(FlexWorldModel.add_embodiment) or pick one of those")
    tok_dir = Path(cfg.tokenizer_path) if cfg.tokenizer_path else run_dir / "tokenizer"
    if not (tok_dir / "model.safetensors").exists():
        raise ConfigError(f"the frame tokenizer of {path} is missing: expected {tok_dir}/model.safetensors")
    tokenizer = ConvAutoencoder.from_pretrained(tok_dir).to(device).eval()
    cache = run_dir / "text_cache.safetensors"
    text = text_mod.make_text_encoder(cfg.text, cache_path=cache if cache.exists() else None)
    text.autosave = False  # the run's cache records the training instructions; inference must not add to it
    for p in model.parameters():
        p.requires_grad_(False)
    return FlexWorldModelWrapper(model, tokenizer, text, embodiment=embodiment, steps=steps, cfg_scale=cfg_scale,
                                 ac_noise=ac_noise, ac_guidance=ac_guidance)
