"""`flexwm train` on a dataset LeRobot wrote: unlabelled episodes train the AC, video and inverse-dynamics modes,
never the instruction-conditioned WAM/policy modes nor the success heads, unless their outcome is declared."""

import json

import pytest
import torch

from flexwm.models import flow
from flexwm.training import run
from flexwm.training.run import loss_fn, make_batch_fn, prepare, preset, train_world_model
from tests.helpers.lerobot_synth import TOP, write_lerobot_dataset

GENERATIVE_WITH_TEXT = ("wam", "policy")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return write_lerobot_dataset(tmp_path_factory.mktemp("lerobot") / "so100", size=(32, 32))


def _cfg(root, **kw):
    return preset("tiny", data=[str(root)], camera=TOP, tokenizer={"image_size": 32}, tokenizer_steps=5,
                  train={"steps": 6, "ckpt_every": 6, "log_every": 3, "batch_size": 16}, **kw)


def _recording(monkeypatch):
    seen = []
    real = flow.flex_loss

    def record(model, batch, modes, generator=None, **kwargs):
        seen.append((batch["outcome"].clone(), list(modes.names), modes.keep_text.clone(), modes.train_heads.clone()))
        return real(model, batch, modes, generator, **kwargs)

    monkeypatch.setattr(run.flow, "flex_loss", record)
    return seen


def test_tiny_training_run_never_trains_the_wam_on_unlabelled_episodes(plain, tmp_path, monkeypatch):
    seen = _recording(monkeypatch)
    ckpt = train_world_model(_cfg(plain), tmp_path / "run", progress=False)
    assert (ckpt / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "run/run_config.json").read_text())
    assert saved["camera"] == TOP and saved["outcome"] is None
    rows = [(int(o), n, bool(k), bool(h)) for outcome, names, keep, heads in seen
            for o, n, k, h in zip(outcome.tolist(), names, keep, heads, strict=True)]
    assert rows and {o for o, *_ in rows} == {flow.OUTCOME_CODES["unlabelled"]}
    assert not [r for r in rows if r[1] in GENERATIVE_WITH_TEXT]  # no WAM/policy row
    assert not any(k for _, _, k, _ in rows) and not any(h for *_, h in rows)  # no instruction, no success heads
    assert {"ac", "inverse", "video"} & {n for _, n, _, _ in rows}  # ... but they do train the other modes


def test_declared_successes_train_the_wam(plain, tmp_path, monkeypatch):
    seen = _recording(monkeypatch)
    cfg = _cfg(plain, outcome="last-frame")
    prep, _, _ = prepare(cfg, tmp_path, progress=False)
    assert {ds.episodes[0]["outcome"] for ds in prep.datasets} == {"success"}
    net = run.build_model(cfg, prep)[0]
    groups = make_batch_fn(prep, cfg)(torch.arange(len(prep.index)))
    loss, _ = loss_fn(net, groups, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    (outcome, names, keep, _), = seen
    assert set(outcome.tolist()) == {flow.OUTCOME_CODES["success"]}
    assert {"wam", "policy"} & set(names) and keep.any()


def test_cli_train_on_a_plain_dataset(tmp_path):
    from typer.testing import CliRunner

    from flexwm.cli import app

    wide = write_lerobot_dataset(tmp_path / "wide", size=(32, 48))  # trained at 32x32 with --resize
    args = ["train", "--data", str(wide), "--out", str(tmp_path / "r"), "--preset", "tiny", "--steps", "2",
            "--set", "tokenizer_steps=3", "--set", "tokenizer.image_size=32", "--set", "train.ckpt_every=2",
            "--resize", "32"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "choose one with --camera" in str(r.output) + str(r.exception)
    r = CliRunner().invoke(app, [*args, "--camera", TOP, "--outcome", "success"])
    assert r.exit_code == 0, str(r.output) + str(r.exception)
    saved = json.loads((tmp_path / "r/run_config.json").read_text())
    assert (saved["camera"], saved["outcome"], saved["resize"]) == (TOP, "success", 32)
