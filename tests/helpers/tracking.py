"""Progress bars and TensorBoard logs as tests see them: a fake terminal on stderr (bars draw only on one) and the
scalars of a TensorBoard log folder read back with TensorBoard's own reader."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal, so progress bars draw into it."""

    def isatty(self) -> bool:
        return True


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> FakeTerminal:
    """Make sys.stderr a FakeTerminal (and clear TQDM_DISABLE) for the rest of the test; returns it."""
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    return term


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the event files directly in `logdir` (TensorBoard's EventAccumulator; the
    test is skipped where the tensorboard package is not installed)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
