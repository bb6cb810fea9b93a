"""One small logging sink: JSON lines on disk, TensorBoard optional. Library code logs here, never prints."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLogger:
    """Append-only JSON-lines metrics file (`metrics.jsonl`), flushed each call so a crash loses nothing."""

    def __init__(self, path: str | Path, tensorboard: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # pragma: no cover - optional dependency
                raise ImportError("tensorboard logging needs `pip install tensorboard`") from e
            self._tb = SummaryWriter(str(self.path.parent / "tb"))

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step), "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file, skipping a torn last line left by a crash."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_metrics(path: str | Path, step: int) -> int:
    """Drop rows after `step` (and a torn last line): a run resumed from its checkpoint at `step` then logs
    the same steps again instead of duplicating them. Atomic. Returns the number of rows dropped."""
    from flexwm.io import atomic_write_text

    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    keep = [json.dumps(r) for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in keep))
    return len(lines) - len(keep)
