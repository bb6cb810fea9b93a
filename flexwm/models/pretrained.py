"""Pretrained model folders: load a world model's parts from a training run, a checkpoint or an exported folder,
and export a run as one self-contained folder (as diffusers saves a pipeline: a manifest + one folder per part).

    DIR/model_index.json                      format, flexwm version, the components, the embodiments (action and
                                              proprio dims, action bounds), the simulators they fit, action horizon,
                                              frame stride, context frames, image and latent shapes
    DIR/world_model/                          model.safetensors + config.json (the model's config only)
    DIR/tokenizer/                            model.safetensors + config.json (the frame tokenizer)
    DIR/text_encoder/config.json              which instruction encoder (kind, id, dim)
    DIR/text_encoder/embeddings.safetensors   the instruction embeddings the run cached (keyed by sha256)

An exported folder holds no dataset paths, no run config and no split: copy it anywhere and load it with
`flexwm.load(DIR)` or `flexwm.FlexWorldModelWrapper.from_pretrained(DIR)`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from flexwm.config import check_device, from_dict
from flexwm.errors import CheckpointError, ConfigError
from flexwm.io import DIR_MODE, FILE_MODE, atomic_write_json
from flexwm.models import text as text_mod
from flexwm.models.tokenizer import FrameTokenizer
from flexwm.models.world_model import FlexWorldModel
from flexwm.runs import MODEL_INDEX, is_exported, resolve_model_dir, resolve_run_dir

FORMAT = "flexwm-model"
FORMAT_VERSION = 1
TEXT_CACHE = "embeddings.safetensors"


def _run_parts(path: Path) -> tuple[Path, Path, text_mod.TextEncoderConfig, Path | None]:
    """(checkpoint dir, tokenizer dir, text-encoder config, text cache or None) of a run or checkpoint dir."""
    ckpt, run = resolve_model_dir(path), resolve_run_dir(path)
    cfg = json.loads((ckpt / "config.json").read_text())
    tok_dir = Path(cfg["tokenizer_path"]) if cfg.get("tokenizer_path") else run / "tokenizer"
    if not (tok_dir / "model.safetensors").exists():
        raise CheckpointError(f"the frame tokenizer of {path} is missing: expected {tok_dir}/model.safetensors. A "
                              "checkpoint copied out of its run loses it; export the run instead (flexwm export "
                              "RUN --out DIR) and copy that folder")
    text = {k: v for k, v in (cfg.get("text") or {}).items() if k in ("kind", "batch_size")}
    cache = run / "text_cache.safetensors"
    return ckpt, tok_dir, from_dict(text_mod.TextEncoderConfig, text), cache if cache.exists() else None


def read_index(path: str | Path) -> dict[str, Any]:
    """The model_index.json of an exported folder, checked."""
    index_path = Path(path) / MODEL_INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{index_path} is not readable ({e}); export the model again") from e
    if index.get("format") != FORMAT or int(index.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{index_path} is not a flexwm model folder of format version <= {FORMAT_VERSION} "
                              f"(got {index.get('format')!r} v{index.get('format_version')}); upgrade flexwm")
    return index


def load_components(path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None
                    ) -> tuple[FlexWorldModel, Any, Any]:
    """(world model, frame tokenizer, text encoder) of a run, a checkpoint or an exported folder, in eval mode
    with gradients off. The text encoder never writes its cache back (inference must not change the model)."""
    check_device(device)
    path = Path(path)
    if is_exported(path):
        read_index(path)
        ckpt, tok_dir = path / "world_model", path / "tokenizer"
        text_cfg = from_dict(text_mod.TextEncoderConfig, json.loads((path / "text_encoder" / "config.json")
                                                                   .read_text())["config"])
        cache = path / "text_encoder" / TEXT_CACHE
        cache = cache if cache.exists() else None
    else:
        ckpt, tok_dir, text_cfg, cache = _run_parts(path)
    model = FlexWorldModel.from_pretrained(ckpt, device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = FrameTokenizer.from_pretrained(tok_dir).to(device).eval()
    text = text_mod.make_text_encoder(text_cfg, cache_path=cache, device=device)
    text.autosave = False
    return model, tokenizer, text


def pick_embodiment(model: FlexWorldModel, path: Any, embodiment: str | None = None,
                    prefer: str | None = None) -> str:
    """`embodiment` if the model knows it; else its only one, or `prefer` (e.g. the simulator's) among several."""
    names = list(model.cfg.embodiments)
    if embodiment is None and len(names) > 1 and prefer is not None:
        embodiment = prefer  # e.g. the simulator's, for a model fine-tuned to a new embodiment
    if embodiment is None:
        if len(names) > 1:
            raise ConfigError(f"{path} was trained on embodiments {names}; pass embodiment= to choose one")
        return names[0]
    if embodiment not in names:
        raise ConfigError(f"{path} knows embodiments {names}, not {embodiment!r}; fine-tune its adapters first "
                          "(FlexWorldModel.add_embodiment) or pick one of those")
    return embodiment


def export_model(src: str | Path, out: str | Path) -> Path:
    """Write the model at `src` (a run -> its latest checkpoint, a checkpoint, or an exported folder) to `out`
    as one self-contained folder (see the module docstring). Written under a temporary name and renamed into
    place, so `out` is either complete or absent. Returns `out`."""
    from flexwm import __version__
    from flexwm.envs import EMBODIMENTS

    src, out = Path(src), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new --out for the exported model")
    model, tokenizer, text = load_components(src)
    if is_exported(src):
        text_cfg = json.loads((src / "text_encoder" / "config.json").read_text())["config"]
        step = read_index(src).get("step")
    else:
        ckpt, _, cfg, _ = _run_parts(src)
        text_cfg = {"kind": cfg.kind, "batch_size": cfg.batch_size}
        state = ckpt / "training_state" / "state.json"
        step = json.loads(state.read_text()).get("step") if state.exists() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp / "world_model")
        tokenizer.save_pretrained(tmp / "tokenizer")
        (tmp / "text_encoder").mkdir()
        if text.cache_path is not None:
            shutil.copyfile(text.cache_path, tmp / "text_encoder" / TEXT_CACHE)
        n_cached = len(getattr(text, "_disk", {}))
        atomic_write_json(tmp / "text_encoder" / "config.json", {
            "config": text_cfg, "encoder_id": text.encoder_id, "dim": text.dim, "cached_instructions": n_cached})
        embodiments = {}
        for name, spec in model.cfg.embodiments.items():
            a = model.adapter(name)
            embodiments[name] = {**dict(spec), "action_low": a.action_low.float().tolist(),
                                 "action_high": a.action_high.float().tolist()}
        atomic_write_json(tmp / MODEL_INDEX, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "flexwm_version": __version__,
            "components": {"world_model": "world_model", "tokenizer": "tokenizer", "text_encoder": "text_encoder"},
            "embodiments": embodiments, "envs": {e: b for e, b in EMBODIMENTS.items() if b in embodiments},
            "action_horizon": model.cfg.action_horizon, "frame_stride": model.cfg.frame_stride,
            "context_frames": model.cfg.context_frames, "latent_shape": list(model.cfg.latent_shape),
            "image_size": tokenizer.config.image_size, "variant": model.cfg.variant, "step": step})
        for f in [tmp, *tmp.rglob("*")]:  # modes as for normally created files (mkdtemp gives 0700)
            os.chmod(f, DIR_MODE if f.is_dir() else FILE_MODE)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

