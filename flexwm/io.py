"""Atomic file writes: a reader sees either the old file or the complete new one, never a partial write."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """Mode of a normally created file (0666 less the umask); mkstemp alone would give 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()
FILE_MODE = _FILE_MODE
DIR_MODE = 0o777 & ~(0o666 & ~_FILE_MODE)  # 0777 less the umask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` then rename tmp over `path` (same directory, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---- pretrained directories: model.safetensors + config.json ----------------------------------------------

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def save_pretrained_dir(directory: Path, state_dict: dict, config: dict) -> None:
    """Write model.safetensors + config.json into `directory`, each atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    atomic_write(directory / "model.safetensors",
                 lambda p: save_file(state, str(p), metadata={"format": "pt", "library": "flexwm"}))
    atomic_write_json(directory / "config.json", config)


def load_pretrained_dir(directory: Path, what: str) -> tuple[dict, dict]:
    """(config dict, CPU state dict) of a `save_pretrained_dir` directory; safetensors only, pickles refused."""
    from safetensors.torch import load_file

    from flexwm.errors import FlexWMError

    directory = Path(directory)
    weights, cfg_path = directory / "model.safetensors", directory / "config.json"
    if not weights.exists():
        pickles = sorted(p.name for p in directory.glob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise FlexWMError(f"{directory} has only pickle checkpoints {pickles}; flexwm refuses to load "
                              "pickle files (they can run code). Convert to model.safetensors first.")
        raise FlexWMError(f"no model.safetensors in {directory}; is this a {what} checkpoint directory?")
    if not cfg_path.exists():
        raise FlexWMError(f"{directory} has model.safetensors but no config.json; both are needed")
    return json.loads(cfg_path.read_text()), load_file(str(weights), device="cpu")


def check_state_dict(expected: dict, state: dict, source: Path, what: str) -> None:
    """Raise ConfigError naming any missing, unexpected or mis-shaped tensor of `state` against `expected`."""
    from flexwm.errors import ConfigError

    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"{what} weights {source} do not match its config.json: missing tensors {missing[:5]}, "
                          f"unexpected tensors {unexpected[:5]}; the config or the weights were edited")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ConfigError(f"{what} tensor {k!r} has shape {tuple(state[k].shape)} but config.json implies "
                              f"{tuple(v.shape)}; the config does not belong to these weights")


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return sha256_bytes(Path(path).read_bytes())


def _json_default(x: Any) -> Any:
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def plain_json(obj: Any) -> Any:
    """`obj` as plain JSON values: numpy scalars and arrays become numbers and lists, anything else unknown to
    JSON its str(); what a result file holds after writing and reading it back."""
    return json.loads(json.dumps(obj, default=_json_default))
