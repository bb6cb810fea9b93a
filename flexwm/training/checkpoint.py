"""Checkpoints written atomically with safe formats only.

Layout of one checkpoint directory (``RUN/checkpoints/step-00001000/``):

    model.safetensors          published weights (EMA weights when EMA is on)
    config.json                the fully resolved config of the run
    training_state/
        raw_model.safetensors  the optimised (non-EMA) weights
        optimizer.safetensors  optimizer tensors;  optimizer.json: param groups and scalars
        rng.safetensors        torch / generator RNG states; state.json: step, scheduler, sampler, python RNG
        sharded/, rng/         instead, in an FSDP run: each process's shards (flexwm.training.distributed)

The directory is written under a temporary name and renamed into place, then ``RUN/checkpoints/latest.json`` is
replaced atomically, so a ``kill -9`` at any moment leaves the previous checkpoint intact and usable.
Only ``.safetensors`` and ``.json`` are ever read; a directory holding pickle files is refused.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from flexwm.errors import CheckpointError
from flexwm.io import DIR_MODE, FILE_MODE, PICKLE_SUFFIXES, atomic_write_json
from flexwm.runs import resolve_model_dir


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def flatten_optimizer(opt_sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, state in opt_sd["state"].items():
        for key, val in state.items():
            name = f"{pid}.{key}"
            if torch.is_tensor(val):
                tensors[name] = val.detach().cpu().contiguous().clone()
            else:
                scalars[name] = val
    return tensors, {"param_groups": opt_sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, val in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def refuse_pickles(path: Path) -> None:
    bad = [p.name for p in Path(path).rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if bad:
        raise CheckpointError(
            f"{path} contains pickle files {bad}; flexwm loads only .safetensors and .json (pickle can run "
            "arbitrary code). Convert the weights to safetensors or remove those files."
        )


def save_checkpoint(run_dir: str | Path, *, step: int, model_state: dict[str, torch.Tensor], config: dict,
                    raw_model_state: dict[str, torch.Tensor] | None = None, optimizer: dict | None = None,
                    rng: dict[str, torch.Tensor] | None = None, state: dict | None = None,
                    keep_last: int = 2, state_dir: Path | None = None) -> Path:
    """Write one checkpoint atomically and point ``latest.json`` at it. Returns the checkpoint directory.
    `state_dir`: a directory already written on the same filesystem (an FSDP run's shards) whose entries are
    moved into ``training_state/`` before the checkpoint appears."""
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=ckpt_root))
    try:
        save_file(_contiguous(model_state), str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        ts = tmp / "training_state"
        ts.mkdir()
        if state_dir is not None:
            for entry in Path(state_dir).iterdir():
                os.replace(entry, ts / entry.name)
            Path(state_dir).rmdir()
        if raw_model_state is not None:
            save_file(_contiguous(raw_model_state), str(ts / "raw_model.safetensors"))
        if optimizer is not None:
            tensors, meta = flatten_optimizer(optimizer)
            save_file(tensors, str(ts / "optimizer.safetensors"))
            (ts / "optimizer.json").write_text(json.dumps(meta))
        if rng:
            save_file(_contiguous(rng), str(ts / "rng.safetensors"))
        (ts / "state.json").write_text(json.dumps({"step": step, **(state or {})}, indent=1))
        for f in [tmp, *tmp.rglob("*")]:  # modes as for normally created files (mkdtemp/safetensors give 0600)
            os.chmod(f, DIR_MODE if f.is_dir() else FILE_MODE)
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():  # a re-save of the same step (e.g. after resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(ckpt_root / "latest.json", {"step": step, "path": final.name})
    _prune(ckpt_root, keep_last, keep=final)
    return final


def _prune(ckpt_root: Path, keep_last: int, keep: Path) -> None:
    steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep_last)]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-step-*"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint directory (or a run's latest) with safe loaders only."""
    path = resolve_model_dir(path)
    refuse_pickles(path)
    out: dict[str, Any] = {"path": path}
    try:
        out["model"] = load_file(str(path / "model.safetensors"), device=map_location)
        out["config"] = json.loads((path / "config.json").read_text())
        ts = path / "training_state"
        if (ts / "raw_model.safetensors").exists():
            out["raw_model"] = load_file(str(ts / "raw_model.safetensors"), device=map_location)
        if (ts / "optimizer.safetensors").exists():
            out["optimizer"] = unflatten_optimizer(load_file(str(ts / "optimizer.safetensors")),
                                                   json.loads((ts / "optimizer.json").read_text()))
        if (ts / "rng.safetensors").exists():
            out["rng"] = load_file(str(ts / "rng.safetensors"))
        if (ts / "state.json").exists():
            out["state"] = json.loads((ts / "state.json").read_text())
    except (OSError, json.JSONDecodeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete ({e}); use an earlier checkpoint "
                              "under checkpoints/ or retrain") from e
    return out


def capture_rng(generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    for name, g in generators.items():
        tensors[f"gen.{name}"] = g.get_state()
    py = random.getstate()
    return tensors, {"python": [py[0], list(py[1]), py[2]]}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    for name, g in generators.items():
        if f"gen.{name}" in tensors:
            g.set_state(tensors[f"gen.{name}"])
    if "python" in meta:
        v, st, gauss = meta["python"]
        random.setstate((v, tuple(st), gauss))
