"""Where runs, checkpoints and exported models live on disk, and how to find them.

A *run* directory is what `flexwm train --out RUN` writes (RUN/checkpoints/step-N/, split.json, ...); a
*checkpoint* directory holds model.safetensors + config.json; an *exported* model (`flexwm export`) is one
self-contained folder with a model_index.json and one subfolder per component. Every command that takes
`--ckpt` accepts all three. Evaluations write to an output folder, by default runs/eval/NAME/ (`results_dir`),
never into the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flexwm.errors import CheckpointError, ConfigError
from flexwm.io import atomic_write_json


def find_latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None. Falls back to scanning if latest.json is missing."""
    ckpt_root = Path(run_dir) / "checkpoints"
    pointer = ckpt_root / "latest.json"
    if pointer.exists():
        try:
            name = json.loads(pointer.read_text())["path"]
            cand = ckpt_root / Path(name).name  # a bare name: the pointer cannot escape the run directory
            if (cand / "model.safetensors").exists():
                return cand
        except (json.JSONDecodeError, KeyError):
            pass
    steps = sorted(p for p in ckpt_root.glob("step-*") if (p / "model.safetensors").exists())
    return steps[-1] if steps else None


MODEL_INDEX = "model_index.json"
EVAL_ROOT = Path("runs") / "eval"


def is_exported(path: str | Path) -> bool:
    """Whether `path` is a folder written by `flexwm export` (it holds model_index.json)."""
    return (Path(path) / MODEL_INDEX).is_file()


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a checkpoint directory, a run directory (-> its latest checkpoint) or an exported model folder
    (-> its world_model/ component)."""
    path = Path(path)
    if is_exported(path):
        return path / "world_model"
    if (path / "model.safetensors").exists():
        return path
    latest = find_latest(path)
    if latest is None:
        raise CheckpointError(
            f"no checkpoint found at {path}: expected model.safetensors + config.json, or a run directory with "
            "checkpoints/step-*/ (train one with `flexwm train ... --out DIR`)"
        )
    return latest


def resolve_run_dir(path: str | Path) -> Path:
    """The training run a run or checkpoint directory belongs to (RUN/checkpoints/step-N -> RUN); an exported
    folder is its own "run" (it has no split.json: commands that need a training split say so)."""
    if is_exported(path):
        return Path(path)
    ckpt = resolve_model_dir(path)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt


def run_heldout(path: str | Path, data: str | Path | None = None, what: str = "this") -> tuple[Path, list[int]]:
    """(dataset, its held-out episode indices) from the split.json of the run at `path` (a run or checkpoint
    directory); `data` defaults to the run's first dataset. `what` names the caller in the error messages."""
    run = resolve_run_dir(path)
    split_path = run / "split.json"
    if not split_path.exists():
        raise ConfigError(f"{run} has no split.json; {what} needs a training run (it uses its train/held-out split)")
    split = json.loads(split_path.read_text())
    names = [str(Path(d)) for d in split["data"]]
    data = Path(data or names[0])
    if str(data) not in names:
        raise ConfigError(f"{data} is not one of the run's datasets {names}; its held-out split is unknown")
    return data, list(split["heldout"][names.index(str(data))])


def results_dir(path: str | Path, root: str | Path = EVAL_ROOT) -> Path:
    """Where evaluations of the model at `path` go by default: runs/eval/NAME/, NAME being the run's (or the
    exported folder's) name. Nothing is written into the model itself."""
    return Path(root) / resolve_run_dir(path).resolve().name


def record_command(run_dir: str | Path, argv: list[str]) -> None:
    """Append one invocation (argv, time) to RUN/command.json."""
    path = Path(run_dir) / "command.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append({"argv": list(argv), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    atomic_write_json(path, rows)
