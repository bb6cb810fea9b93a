"""One small logging sink: JSON lines on disk, TensorBoard optional; and the progress bars of long work.
Library code logs here, never prints."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"  # OUT/tensorboard/ unless a directory is given


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def check_tensorboard() -> None:
    """ConfigError naming the fix when TensorBoard logging is asked for but the package is not installed
    (checked before long work starts, not when the first scalar is written)."""
    import importlib.util

    from flexwm.errors import ConfigError

    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("TensorBoard logging (--tensorboard) needs the tensorboard package: "
                          "pip install tensorboard (or pip install 'flexwm[track]'), or leave the option off")


class TensorBoardLog:
    """Scalars written as TensorBoard event files in `logdir` (view with `tensorboard --logdir DIR`).

    `purge_step`: the first step this process logs; TensorBoard drops the points an earlier, interrupted process
    logged from that step on (a run resumed from a checkpoint logs them again, as `truncate_metrics` arranges for
    metrics.jsonl)."""

    def __init__(self, logdir: str | Path, purge_step: int | None = None):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._w = SummaryWriter(str(self.logdir), purge_step=purge_step or None)

    def log(self, step: int, prefix: str = "", **metrics: Any) -> None:
        """One scalar per finite number in `metrics` (tag: prefix + key); other values are skipped."""
        for k, v in metrics.items():
            v = _jsonable(v)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self._w.add_scalar(prefix + k, v, int(step))
        self._w.flush()

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def tensorboard_log(tensorboard: bool | str | Path | None, out: str | Path,
                    purge_step: int | None = None) -> TensorBoardLog | None:
    """The TensorBoard log a command asked for: None when off, else one in the given directory (True: the
    default OUT/tensorboard/)."""
    if tensorboard is None or tensorboard is False:
        return None
    logdir = Path(out) / TENSORBOARD_DIR if tensorboard is True else Path(tensorboard)
    return TensorBoardLog(logdir, purge_step=purge_step)


class MetricsLogger:
    """Append-only JSON-lines metrics file (`metrics.jsonl`), flushed each call so a crash loses nothing; every
    number also goes to TensorBoard when `tensorboard` is given (a TensorBoardLog, a directory, or True for
    the folder of `path`/tensorboard)."""

    def __init__(self, path: str | Path, tensorboard: TensorBoardLog | bool | str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)
        self._tb = (tensorboard if isinstance(tensorboard, TensorBoardLog)
                    else tensorboard_log(tensorboard, self.path.parent))

    def log(self, step: int, **metrics: Any) -> None:
        row = {"step": int(step), "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            self._tb.log(step, **{k: v for k, v in row.items() if k not in ("step", "time")})

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---- progress bars -------------------------------------------------------------------------------------------


def progress_enabled(enabled: bool = True) -> bool:
    """Whether a progress bar is shown: asked for, not switched off with the environment variable TQDM_DISABLE
    (tqdm's own switch), and stderr is a terminal (bars never fill a log file), or a notebook shows it."""
    if not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    from tqdm.autonotebook import tqdm

    if tqdm.__module__ != "tqdm.std":  # a notebook widget, not a stream
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "it", leave: bool = True,
                 initial: int = 0) -> Any:
    """A tqdm bar on stderr for long work; a disabled one (every call a no-op) when `progress_enabled` says
    no. Bars only draw: what a command computes or writes never depends on them."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, initial=initial, file=sys.stderr,
                dynamic_ncols=True, disable=not progress_enabled(enabled))


def progress_note(message: str) -> None:
    """One line on stderr above any progress bar (kept in logs when no bar is drawn)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


@contextmanager
def above_bars() -> Iterator[None]:
    """Print to stdout inside this block without tearing a progress bar drawn on stderr."""
    from tqdm.auto import tqdm

    with tqdm.external_write_mode():
        yield


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
