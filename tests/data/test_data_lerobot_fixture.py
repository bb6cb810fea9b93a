"""Datasets written by LeRobot's own writer (tests/fixtures/lerobot_v3_*, made by
tests/fixtures/make_lerobot_fixtures.py with lerobot-dataset 0.4.4): flexwm's `data info`/`data verify`, its
reader and a tiny `flexwm train` on them. The live round trip (LeRobot installed): `make lerobot-roundtrip`,
which also runs these tests on datasets LeRobot writes afresh (FLEXWM_LEROBOT_FIXTURES names their folder)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flexwm.cli import app
from flexwm.data import FlexDataset, dataset_info, verify
from tests.fixtures import make_lerobot_fixtures as fx

FIXTURES = Path(os.environ.get("FLEXWM_LEROBOT_FIXTURES") or Path(fx.__file__).resolve().parent)
SO100, H264 = FIXTURES / "lerobot_v3_so100", FIXTURES / "lerobot_v3_h264"
TOP, WRIST = fx.DATASETS["lerobot_v3_so100"]["cameras"]
(FRONT,) = fx.DATASETS["lerobot_v3_h264"]["cameras"]
N = len(fx.EPISODE_LENGTHS)


def test_fixtures_were_written_by_lerobot():
    for root, codec in ((SO100, "av1"), (H264, "h264")):
        info = json.loads((root / "meta/info.json").read_text())
        assert info["codebase_version"] == "v3.0" and info["total_episodes"] == N
        assert {ft["info"]["video.codec"] for ft in info["features"].values() if ft["dtype"] == "video"} == {codec}
        assert not (root / "meta/flexwm.json").exists()


@pytest.mark.parametrize("root,cameras", [(SO100, (TOP, WRIST)), (H264, (FRONT,))])
def test_flexwm_reads_what_lerobot_wrote(root, cameras):
    for c, camera in enumerate(cameras):
        ds = FlexDataset(root, camera=camera)
        assert not ds.flexwm_layout and len(ds) == N and ds.num_frames == sum(fx.EPISODE_LENGTHS)
        assert (ds.image_size, ds.action_dim, ds.proprio_dim, ds.fps) == ((32, 32), 4, 6, fx.FPS)
        assert ds.embodiment == "so100" and ds.task_list() == list(fx.TASKS)
        for e, T in enumerate(fx.EPISODE_LENGTHS):
            ep = ds.load_episode(e)
            assert ep.frames.shape == (T, 32, 32, 3) and ep.frames.dtype == np.uint8
            np.testing.assert_array_equal(ep.actions, [fx.action(e, t) for t in range(T)])  # exactly
            np.testing.assert_array_equal(ep.proprio, [fx.state(e, t) for t in range(T)])
            want = np.stack([fx.frame(e, t, c) for t in range(T)]).astype(int)
            assert np.abs(ep.frames.astype(int) - want).mean() < 8, (camera, e)
            # each step's own frame: the grey level of the lower half follows the step
            lower = ep.frames[:, 20:30, 4:28].mean(axis=(1, 2, 3))
            levels = np.array([fx.level(e, t) for t in range(T)])
            np.testing.assert_allclose(lower, levels if c == 0 else 255 - levels, atol=6)
            m = ep.meta
            assert (m.outcome, m.source, m.instruction) == ("unlabelled", "external", fx.task(e))


def test_data_info_and_verify_cli():
    runner = CliRunner()
    r = runner.invoke(app, ["data", "info", str(SO100)])
    assert r.exit_code != 0 and "choose one with --camera" in str(r.output) + str(r.exception)
    r = runner.invoke(app, ["data", "info", str(SO100), "--camera", TOP, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["by_outcome"] == {"unlabelled": N} and info["cameras"] == [TOP, WRIST]
    assert dataset_info(H264)["by_outcome"] == {"unlabelled": N}  # one camera: no choice needed
    for args in (["--camera", WRIST], ["--camera", TOP], []):
        root = SO100 if args else H264
        r = runner.invoke(app, ["data", "verify", str(root), *args])
        assert r.exit_code == 0, r.output
        report = json.loads(r.output)
        assert report["ok"] == N and report["damaged"] == []
    assert verify(H264)["notes"] == []


def test_tiny_train_on_a_lerobot_written_dataset(tmp_path):
    data = shutil.copytree(SO100, tmp_path / "so100")  # training may cache next to the data; keep fixtures clean
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--preset", "tiny",
                                 "--camera", TOP, "--steps", "4", "--set", "tokenizer.image_size=32",
                                 "--set", "tokenizer_steps=5", "--set", "train.ckpt_every=4",
                                 "--set", "train.log_every=2", "--set", "train.batch_size=8"])
    assert r.exit_code == 0, str(r.output) + repr(r.exception)
    assert list(out.rglob("model.safetensors"))
    assert json.loads((out / "run_config.json").read_text())["camera"] == TOP
