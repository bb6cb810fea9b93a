"""Evaluations and calibrations write to an output folder, never into the model; the commands that read their
results (`--success-threshold calibrated`, `flexwm report`) find them there, or where they are pointed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flexwm.cli import app
from flexwm.errors import ConfigError
from tests.helpers.toy_training_data import write_toy_dataset as write_toy_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run made with the Python API; 30 episodes, so its held-out ones hold a success and a failure."""
    import flexwm

    root = tmp_path_factory.mktemp("outputs")
    data = write_toy_data(root / "toy", n=30)
    ckpt = flexwm.train(data, root / "run", preset="tiny", progress=False, tokenizer={"image_size": 32},
                        tokenizer_steps=10, overrides=["train.steps=4", "train.ckpt_every=4"])
    assert ckpt.parent.parent == root / "run" and ckpt.name == "step-00000004"
    return root / "run"


def _files(path):
    return sorted(p.relative_to(path) for p in path.rglob("*"))


def test_calibration_goes_to_the_output_folder_and_thresholds_read_it(run, tmp_path, monkeypatch):
    from flexwm.evaluation.calibrate import resolve_threshold

    monkeypatch.chdir(tmp_path)
    before = _files(run)
    r = CliRunner().invoke(app, ["calibrate", "--ckpt", str(run), "--flow-steps", "2"])
    assert r.exit_code == 0, r.output
    default = tmp_path / "runs" / "eval" / "run" / "imagined_calibration.json"
    cal = json.loads(default.read_text())
    assert cal["flow_steps"] == 2 and cal["n_success"] >= 1 and cal["n_failure"] >= 1
    assert _files(run) == before  # nothing written into the model's run
    assert resolve_threshold("calibrated", run, 2) == cal["threshold"]

    r = CliRunner().invoke(app, ["calibrate", "--ckpt", str(run), "--flow-steps", "2", "--seed", "1", "--out",
                                 str(tmp_path / "cal")])
    assert r.exit_code == 0, r.output
    other = json.loads((tmp_path / "cal" / "imagined_calibration.json").read_text())
    assert resolve_threshold("calibrated", run, 2, tmp_path / "cal") == other["threshold"]
    assert resolve_threshold("calibrated", run, 2, tmp_path / "cal" / "imagined_calibration.json") == \
        other["threshold"]
    with pytest.raises(ConfigError, match="flow steps"):
        resolve_threshold("calibrated", run, 4)
    with pytest.raises(ConfigError, match="flexwm calibrate"):
        resolve_threshold("calibrated", run, 2, tmp_path / "nowhere")
    assert resolve_threshold("0.7", run, 2) == 0.7
    # where older versions wrote it, inside a training run, is still read
    default.rename(run / "imagined_calibration.json")
    try:
        assert resolve_threshold("calibrated", run, 2) == cal["threshold"]
    finally:
        (run / "imagined_calibration.json").unlink()


def _fake_eval(folder, policy):
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"episodes": 2, "successes": 1, "rate": 0.5, "ci95": [0.1, 0.9]}
    (folder / f"eval-{policy}.json").write_text(json.dumps({
        "policy": policy, "instructions": "eval", "average_over_tasks": 0.5, "pooled": summary,
        "per_task": {"toy": {"summary": summary, "latency": {"mean_s": 0.1}}}}))


def test_report_reads_results_from_output_folders(run, tmp_path, monkeypatch):
    from flexwm.report import build_report

    monkeypatch.chdir(tmp_path)
    _fake_eval(tmp_path / "runs" / "eval" / "run", "policy-in-default-folder")
    _fake_eval(tmp_path / "elsewhere", "policy-pointed-at")
    page = build_report(run, tmp_path / "a.html", rollouts=0, progress=False).read_text()
    assert "policy-in-default-folder" in page and "policy-pointed-at" not in page
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "b.html"), "--rollouts", "0",
                                 "--results", str(tmp_path / "elsewhere")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "b.html").read_text()
    assert "policy-pointed-at" in page and "policy-in-default-folder" not in page
    with pytest.raises(ConfigError, match="no such folder"):
        build_report(run, tmp_path / "c.html", rollouts=0, results=[tmp_path / "missing"])


def test_an_exported_model_has_no_split_so_calibration_says_what_it_needs(run, tmp_path):
    import flexwm

    exported = flexwm.export(run, tmp_path / "exported")
    with pytest.raises(ConfigError, match="needs a training run"):
        CliRunner().invoke(app, ["calibrate", "--ckpt", str(exported), "--out", str(tmp_path / "c")],
                           catch_exceptions=False)
