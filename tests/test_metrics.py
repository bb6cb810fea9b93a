"""The logging sink and the progress bars: metrics.jsonl always, TensorBoard only when asked for (and a clear
error naming the fix when its package is missing); bars only on a terminal, never with TQDM_DISABLE, on stderr."""

import importlib.util
import json
import sys

import pytest

from flexwm.errors import ConfigError
from flexwm.metrics import MetricsLogger, TensorBoardLog, progress_bar, progress_enabled, progress_note
from tests.helpers.tracking import FakeTerminal, on_a_terminal, read_scalars


def test_bars_draw_only_on_a_terminal_and_never_with_tqdm_disable(monkeypatch, capsys):
    term = on_a_terminal(monkeypatch)
    assert progress_enabled()
    with progress_bar(3, "work", unit="ep") as bar:
        for _ in range(3):
            bar.update(1)
    assert "work" in term.getvalue() and "3/3" in term.getvalue()
    assert capsys.readouterr().out == ""  # never on stdout, where results are printed

    assert not progress_enabled(False)  # the caller said no
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not progress_enabled()
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress_enabled()

    monkeypatch.setattr(sys, "stderr", type("Log", (FakeTerminal,), {"isatty": lambda self: False})())
    assert not progress_enabled()  # a log file or a pipe
    bar = progress_bar(3, "work")
    bar.update(3)
    bar.close()
    assert sys.stderr.getvalue() == ""
    progress_note("iteration 1: mean return 0.5")  # notes still reach a log
    assert sys.stderr.getvalue() == "iteration 1: mean return 0.5\n"


def test_tensorboard_is_off_unless_asked_for(tmp_path):
    with MetricsLogger(tmp_path / "metrics.jsonl") as log:
        log.log(1, loss=0.5)
    assert [json.loads(x)["loss"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_a_missing_tensorboard_package_is_a_clear_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install tensorboard"):
        MetricsLogger(tmp_path / "metrics.jsonl", tensorboard=True)
    with pytest.raises(ConfigError, match=r"--tensorboard"):
        TensorBoardLog(tmp_path / "tb")


def test_metrics_logger_mirrors_numbers_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsLogger(tmp_path / "metrics.jsonl", tensorboard=True) as log:
        log.log(1, loss=2.0, lr=1e-3, note="text is skipped", bad=float("nan"))
        log.log(2, loss=1.0, lr=5e-4)
    scalars = read_scalars(tmp_path / "tensorboard")
    assert sorted(scalars) == ["loss", "lr"]
    assert scalars["loss"] == [(1, 2.0), (2, 1.0)]
    with TensorBoardLog(tmp_path / "elsewhere") as tb:
        tb.log(7, "tokenizer/", mse=0.25)
    assert read_scalars(tmp_path / "elsewhere") == {"tokenizer/mse": [(7, 0.25)]}
