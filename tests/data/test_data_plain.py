"""Datasets LeRobot wrote, read as they are: packed files, several cameras, h264 and AV1, the tasks table, and
the outcome rules for episodes without flexwm labels."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flexwm.cli import app
from flexwm.data import DatasetWriter, FlexDataset, dataset_info, format_info, verify, write_preview
from flexwm.data.video import decode_video
from flexwm.errors import ConfigError, DatasetError
from tests.helpers.lerobot_synth import (
    AV1,
    CAMERAS,
    EPISODE_TASK,
    LENGTHS,
    TASKS,
    TOP,
    WRIST,
    actions,
    decoded_step,
    frames,
    state,
    success,
    write_lerobot_dataset,
)
from tests.helpers.synth_data import SCHEMA, make_episode, write_episodes, write_legacy_episodes
from tests.helpers.tracking import on_a_terminal
from tests.helpers.video import count_decoded_frames


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return write_lerobot_dataset(tmp_path_factory.mktemp("lerobot") / "so100")


@pytest.mark.parametrize("camera", [TOP, WRIST])
def test_packed_episodes_read_frame_by_frame(packed, camera):
    ds = FlexDataset(packed, camera=camera)
    assert not ds.flexwm_layout and len(ds) == len(LENGTHS) and ds.num_frames == sum(LENGTHS)
    assert (ds.image_size, ds.action_dim, ds.proprio_dim, ds.state_dim) == ((32, 48), 5, 6, 0)
    assert ds.embodiment == "so100" and ds.fps == 10 and ds.task_list() == list(TASKS)
    for i in reversed(range(len(ds))):  # out of order: every episode is found by seeking, not by reading on
        ep = ds.load_episode(i)
        np.testing.assert_array_equal(ep.actions, actions(i))  # exactly
        np.testing.assert_array_equal(ep.proprio, state(i))
        assert ep.state.shape == (LENGTHS[i], 0)
        # the right frames (each step's band level) and close to what was encoded
        assert [decoded_step(f, camera, i) for f in ep.frames] == list(range(LENGTHS[i]))
        err = np.abs(ep.frames.astype(int) - frames(camera, i, 32, 48).astype(int)).mean()
        assert err < 4.0, (camera, i, err)
        m = ep.meta
        assert (m.outcome, m.source, m.embodiment) == ("unlabelled", "external", "so100")
        assert m.instruction == TASKS[EPISODE_TASK[i]]
        np.testing.assert_array_equal(ep.success, success(i))  # the stored flags, unused while unlabelled
        assert "camera" in ds.episodes[i] and ds.episodes[i]["camera"] == camera


def test_av1_is_decoded_when_the_build_has_a_decoder(packed):
    codec = CAMERAS[WRIST][0]
    if not AV1:
        pytest.skip("this ffmpeg build has no AV1 encoder (the wrist camera was written as h264)")
    assert codec == "libsvtav1"
    info = json.loads((packed / "meta/info.json").read_text())
    assert info["features"][WRIST]["info"]["video.codec"] == "av1"
    got = decode_video(packed / f"videos/{WRIST}/chunk-000/file-000.mp4", from_timestamp=sum(LENGTHS[:3]) / 10,
                       max_frames=LENGTHS[3])
    assert [decoded_step(f, WRIST, 3) for f in got] == list(range(LENGTHS[3]))


def test_camera_must_be_chosen_when_there_are_several(packed, tmp_path):
    with pytest.raises(DatasetError, match=rf"2 cameras \['{TOP}', '{WRIST}'\]; choose one with --camera"):
        FlexDataset(packed)
    with pytest.raises(DatasetError, match=rf"no camera 'observation.images.side'; its cameras are \['{TOP}'"):
        FlexDataset(packed, camera="observation.images.side")
    one = write_lerobot_dataset(tmp_path / "one", cameras=(TOP,), robot_type=None)
    ds = FlexDataset(one)  # the only camera is the default
    assert ds.camera == TOP and ds.embodiment == "lerobot"
    assert FlexDataset(one, embodiment="koch").embodiment == "koch"


def test_outcome_rules(packed, tmp_path):
    cam = dict(camera=TOP)
    assert {e["outcome"] for e in FlexDataset(packed, **cam).episodes} == {"unlabelled"}
    ds = FlexDataset(packed, outcome="success-column", **cam)
    assert [e["outcome"] for e in ds.episodes] == ["success", "failure", "failure", "success", "failure"]
    np.testing.assert_array_equal(ds.load_columns(3)["next.success"], success(3))
    ds = FlexDataset(packed, outcome="last-frame", **cam)
    assert {e["outcome"] for e in ds.episodes} == {"success"}
    assert ds.load_columns(1)["next.success"].tolist() == [False] * (LENGTHS[1] - 1) + [True]
    ds = FlexDataset(packed, outcome="success", **cam)  # curated: the stored flag where it fires, else the end
    np.testing.assert_array_equal(ds.load_columns(0)["next.success"], success(0))
    assert ds.load_columns(2)["next.success"][-1] and ds.load_columns(2)["next.success"].sum() == 1
    with pytest.raises(ConfigError, match="unknown outcome rule 'won'"):
        FlexDataset(packed, outcome="won", **cam)
    bare = write_lerobot_dataset(tmp_path / "bare", cameras=(TOP,), with_success=False)
    with pytest.raises(ConfigError, match="'success-column' needs a next.success feature"):
        FlexDataset(bare, outcome="success-column")
    assert not FlexDataset(bare).load_columns(0)["next.success"].any()
    # flexwm's own labels are kept by default, and a declaration overrides them
    write_episodes(tmp_path / "fx", range(3))
    assert [e["outcome"] for e in FlexDataset(tmp_path / "fx").episodes] == ["success", "failure", "play"]
    assert {e["outcome"] for e in FlexDataset(tmp_path / "fx", outcome="unlabelled").episodes} == {"unlabelled"}


def test_info_verify_preview_on_a_plain_dataset(packed, tmp_path):
    info = dataset_info(packed, camera=WRIST)
    assert info["format"] == "lerobot" and info["cameras"] == [TOP, WRIST] and info["camera"] == WRIST
    assert (info["action_dim"], info["proprio_dim"], info["state_dim"]) == (5, 6, 0)
    assert info["episodes"] == 5 and info["by_outcome"] == {"unlabelled": 5}
    assert info["tasks"] == {TASKS[0]: 3, TASKS[1]: 2}
    assert info["features"]["success"] == "next.success"
    text = format_info(info)
    assert f"{WRIST} (read)" in text and TOP in text and "unlabelled" in text and TASKS[0] in text
    assert dataset_info(packed, camera=TOP, outcome="success-column")["by_outcome"] == {"success": 2, "failure": 3}
    report = verify(packed, camera=TOP)
    assert report["damaged"] == [] and report["ok"] == 5 and report["notes"] == []
    out = write_preview(packed, tmp_path / "p.mp4", camera=TOP)
    assert len(decode_video(out)) == max(LENGTHS)

    runner = CliRunner()
    r = runner.invoke(app, ["data", "info", str(packed)])
    assert r.exit_code != 0 and "choose one with --camera" in str(r.output) + str(r.exception)
    r = runner.invoke(app, ["data", "info", str(packed), "--camera", TOP, "--outcome", "last-frame", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["by_outcome"] == {"success": 5}
    r = runner.invoke(app, ["data", "verify", str(packed), "--camera", WRIST])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] == 5
    r = runner.invoke(app, ["data", "preview", str(packed), "--camera", TOP, "--out", str(tmp_path / "c.mp4")])
    assert r.exit_code == 0 and (tmp_path / "c.mp4").is_file()
    before = (tmp_path / "c.mp4").read_bytes()
    r = runner.invoke(app, ["data", "preview", str(packed), "--camera", TOP, "--out", str(tmp_path / "c.mp4")])
    assert r.exit_code != 0 and "exists" in str(r.output) + str(r.exception)  # never replaced silently
    assert (tmp_path / "c.mp4").read_bytes() == before


def test_verify_draws_a_bar_over_the_episodes_on_a_terminal_and_changes_nothing(packed, monkeypatch, capsys):
    from flexwm.cli import data_verify

    quiet = verify(packed, camera=TOP)
    term = on_a_terminal(monkeypatch)
    assert verify(packed, camera=TOP) == quiet and term.getvalue() == ""  # the library draws only when asked
    assert verify(packed, camera=TOP, progress=True) == quiet
    assert "verify" in term.getvalue() and f"{len(LENGTHS)}/{len(LENGTHS)}" in term.getvalue()
    capsys.readouterr()
    term.seek(0)
    term.truncate()
    # the command asks for the bar; stdout is the same JSON as ever
    data_verify(packed, camera=TOP, action_key=None, state_key=None)
    assert f"{len(LENGTHS)}/{len(LENGTHS)}" in term.getvalue()
    assert capsys.readouterr().out == json.dumps(quiet, indent=2, sort_keys=True, default=str) + "\n"


def test_damage_in_a_packed_file_names_it(packed, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(packed, root)
    path = root / "data/chunk-000/file-001.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    report = verify(root, camera=TOP)
    assert [d["episode_index"] for d in report["damaged"]] == [3, 4]
    assert "file-001.parquet" in report["damaged"][0]["error"]
    meta = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(meta)
    pq.write_table(table.filter(pa.compute.equal(table["episode_index"], 0)), meta)  # episode 1's row lost
    with pytest.raises(DatasetError, match=r"not 0\.\.3 \(episode 1 is missing"):
        FlexDataset(root, camera=TOP)


def test_flexwm_does_not_append_to_a_plain_dataset(packed):
    with pytest.raises(DatasetError, match="written by LeRobot .* does not append"):
        DatasetWriter(packed, **SCHEMA)


def test_a_flexwm_dataset_repacked_by_lerobot_is_still_read(tmp_path):
    """What LeRobot's dataset tools may leave: episodes packed into one file, flexwm's metadata columns gone."""
    root = tmp_path / "fx"
    write_legacy_episodes(root, range(3))
    want = [FlexDataset(root).load_episode(i) for i in range(3)]
    tables = [pq.read_table(root / f"data/chunk-000/file-{i:03d}.parquet") for i in range(3)]
    for i in range(3):
        (root / f"data/chunk-000/file-{i:03d}.parquet").unlink()
    pq.write_table(pa.concat_tables(tables), root / "data/chunk-000/file-000.parquet")
    rows = [pq.read_table(root / f"meta/episodes/chunk-000/file-{i:03d}.parquet") for i in range(3)]
    for i in range(3):
        (root / f"meta/episodes/chunk-000/file-{i:03d}.parquet").unlink()
    packed = pa.concat_tables(rows).drop_columns(["outcome", "flexwm/data_sha256"])  # labels dropped
    packed = packed.set_column(packed.schema.get_field_index("data/file_index"), "data/file_index",
                               pa.array([0, 0, 0], pa.int64()))
    pq.write_table(packed, root / "meta/episodes/chunk-000/file-000.parquet")
    ds = FlexDataset(root)  # the outcome survives in the data (flexwm.outcome), the other labels do not
    assert not ds.flexwm_layout and [e["outcome"] for e in ds.episodes] == ["success", "failure", "play"]
    assert {e["source"] for e in ds.episodes} == {"external"}
    for i in range(3):
        got = ds.load_episode(i)
        np.testing.assert_array_equal(got.actions, want[i].actions)
        np.testing.assert_array_equal(got.state, want[i].state)
        np.testing.assert_array_equal(got.frames, want[i].frames)
    assert verify(root)["damaged"] == []


def test_new_datasets_have_lerobot_image_stats_and_quantiles(tmp_path):
    write_episodes(tmp_path / "one", [0])
    stats = json.loads((tmp_path / "one/meta/stats.json").read_text())
    ep = make_episode(0)
    img = stats["observation.images.main"]
    for name in ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99"):
        arr = np.asarray(img[name])
        assert arr.shape == (3, 1, 1) and (arr >= 0).all() and (arr <= 1).all(), name
    px = ep.frames.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.asarray(img["mean"]).reshape(3), px.mean(0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(img["q50"]).reshape(3), np.quantile(px, 0.5, axis=0), atol=1e-9)
    assert img["count"] == [ep.length]
    for key, x in (("action", ep.actions), ("observation.state", ep.proprio), ("flexwm.env_state", ep.state)):
        for q in (1, 10, 50, 90, 99):
            np.testing.assert_allclose(stats[key][f"q{q:02d}"], np.quantile(x.astype(np.float64), q / 100, axis=0),
                                       rtol=1e-6)
    assert "observation.env_state" not in stats  # privileged state is not offered to a policy as an observation
    info = json.loads((tmp_path / "one/meta/info.json").read_text())
    assert "flexwm.env_state" in info["features"] and not any(k.startswith("observation.env") for k in info["features"])

    write_episodes(tmp_path / "one", [1, 2])  # quantiles: count-weighted mean over episodes, as LeRobot's
    stats = json.loads((tmp_path / "one/meta/stats.json").read_text())
    eps = [make_episode(i) for i in range(3)]
    n = sum(e.length for e in eps)
    want = sum(np.quantile(e.actions.astype(np.float64), 0.9, axis=0) * e.length for e in eps) / n
    np.testing.assert_allclose(stats["action"]["q90"], want, rtol=1e-6)
    assert stats["observation.images.main"]["count"] == [sum(e.length for e in eps)]


def _make_old(root):
    """Rewrite `root` as flexwm wrote datasets before: observation.env_state, no quantiles/image stats/checksums."""
    for path in (root / "data").rglob("file-*.parquet"):
        t = pq.read_table(path).drop_columns(["flexwm.outcome"])
        pq.write_table(t.rename_columns([("observation.env_state" if n == "flexwm.env_state" else n)
                                         for n in t.column_names]), path)
    for path in (root / "meta/episodes").rglob("file-*.parquet"):
        t = pq.read_table(path)
        drop = [n for n in t.column_names if n.startswith("stats/observation.images") or n.endswith(("/q01", "/q10",
                "/q50", "/q90", "/q99")) or n.endswith("_sha256")]
        t = t.drop_columns(drop)
        t = t.rename_columns([n.replace("stats/flexwm.env_state/", "stats/observation.env_state/")
                              for n in t.column_names])
        pq.write_table(t, path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"] = {("observation.env_state" if k == "flexwm.env_state" else k): v
                        for k, v in info["features"].items() if k != "flexwm.outcome"}
    (root / "meta/info.json").write_text(json.dumps(info))
    stats = json.loads((root / "meta/stats.json").read_text())
    (root / "meta/stats.json").write_text(json.dumps({k: {s: v for s, v in st.items() if not s.startswith("q")}
                                                      for k, st in stats.items() if "images" not in k}))


def test_old_datasets_still_read_and_resume(tmp_path):
    root = tmp_path / "old"
    write_legacy_episodes(root, range(3))
    _make_old(root)
    ds = FlexDataset(root)
    assert ds.flexwm_layout and ds.state_dim == SCHEMA["state_dim"]
    for i in range(3):
        np.testing.assert_array_equal(ds.load_episode(i).state, make_episode(i).state)
        assert ds.load_episode(i).meta == make_episode(i).meta
    write_episodes(root, [3])  # appends under the old column name, and completes the stats
    ds = FlexDataset(root)
    np.testing.assert_array_equal(ds.load_columns(3)["flexwm.env_state"], make_episode(3).state)
    columns = pq.read_table(root / "data/chunk-000/file-003.parquet").column_names
    assert "observation.env_state" in columns and "flexwm.outcome" not in columns  # one schema for all files
    stats = json.loads((root / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.main"]["q99"]).shape == (3, 1, 1)
    assert stats["observation.images.main"]["count"] == [sum(make_episode(i).length for i in range(4))]
    assert "q50" in stats["observation.env_state"]
    assert verify(root)["damaged"] == []


def test_an_episode_late_in_a_packed_mp4_is_reached_by_seeking(tmp_path, monkeypatch):
    """Reading the last episode of a long file decodes one group of pictures before it, not the whole file."""
    from fractions import Fraction

    from flexwm.data import video as video_mod

    n, gop = 400, 10
    clip = np.zeros((n, 16, 16, 3), np.uint8)
    clip[:, :, :] = (10 + 6 * (np.arange(n) % 40))[:, None, None, None]
    path = tmp_path / "long.mp4"
    video_mod.encode_frames(clip, str(path), container_format="mp4", codec="libx264", rate=Fraction(10, 1),
                            options={"crf": "18", "g": str(gop), "bf": "0"})
    decoded = count_decoded_frames(monkeypatch)
    got = video_mod.decode_video(path, from_timestamp=(n - 12) / 10, to_timestamp=(n - 2) / 10)
    assert len(got) == 10 and np.allclose(got[:, 4:12, 4:12].mean(axis=(1, 2, 3)), clip[n - 12:n - 2, 0, 0, 0], atol=3)
    assert len(decoded) <= 10 + gop + 1, len(decoded)  # not the n - 2 frames a read from the start needs


def test_frames_can_be_scaled_on_decoding(packed):
    ds = FlexDataset(packed, camera=TOP, image_size=16)
    assert ds.image_size == (16, 16) and ds.stored_image_size == (32, 48) and ds.episodes[0]["image_size"] == [16, 16]
    ep = ds.load_episode(3)
    assert ep.frames.shape == (LENGTHS[3], 16, 16, 3)
    want = frames(TOP, 3, 32, 48).reshape(LENGTHS[3], 16, 2, 16, 3, 3).mean(axis=(2, 4))  # area average
    assert np.abs(ep.frames - want).mean() < 4.0
    assert FlexDataset(packed, camera=TOP, image_size=(32, 48)).episodes[0].get("image_size") is None  # no-op
    with pytest.raises(ConfigError, match="image size 3 must be"):
        FlexDataset(packed, camera=TOP, image_size=3)


def test_a_dataset_without_proprio_gets_one_constant_dim(tmp_path):
    root = write_lerobot_dataset(tmp_path / "nostate", cameras=(TOP,))
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["observation.state"]
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = FlexDataset(root)
    assert ds.proprio_dim == 1 and ds.layout.state_key is None
    cols = ds.load_columns(2)
    assert cols["observation.state"].shape == (LENGTHS[2], 1) and not cols["observation.state"].any()
    np.testing.assert_array_equal(cols["action"], actions(2))


JOINTS_ACTION, JOINTS_STATE = "action.joint_positions", "observation.joint_positions"


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    """A hub-style dataset whose actions and proprio live under other names than action/observation.state."""
    return write_lerobot_dataset(tmp_path_factory.mktemp("lerobot") / "joints", cameras=(TOP,),
                                 action_key=JOINTS_ACTION, state_key=JOINTS_STATE)


def test_action_and_state_features_can_be_named(renamed, tmp_path):
    ds = FlexDataset(renamed, action_key=JOINTS_ACTION, state_key=JOINTS_STATE)
    assert (ds.layout.action_key, ds.layout.state_key) == (JOINTS_ACTION, JOINTS_STATE)
    assert (ds.action_dim, ds.proprio_dim) == (5, 6)
    for i in (3, 0):
        cols = ds.load_columns(i)  # returned under flexwm's names
        np.testing.assert_array_equal(cols["action"], actions(i))
        np.testing.assert_array_equal(cols["observation.state"], state(i))
    ep = ds.load_episode(1)
    np.testing.assert_array_equal(ep.actions, actions(1))
    np.testing.assert_array_equal(ep.proprio, state(1))
    # part of the episode's identity (caches), as the camera is
    assert (ds.episodes[0]["action_key"], ds.episodes[0]["state_key"]) == (JOINTS_ACTION, JOINTS_STATE)
    assert "action_key" not in FlexDataset(write_lerobot_dataset(tmp_path / "std", cameras=(TOP,))).episodes[0]

    # proprio left unnamed: observation.state is absent, so one constant dim, as for a dataset without proprio
    only_action = FlexDataset(renamed, action_key=JOINTS_ACTION)
    assert only_action.layout.state_key is None and only_action.proprio_dim == 1

    info = dataset_info(renamed, action_key=JOINTS_ACTION, state_key=JOINTS_STATE)
    assert info["features"]["action"] == JOINTS_ACTION and info["features"]["proprio"] == JOINTS_STATE
    assert verify(renamed, action_key=JOINTS_ACTION, state_key=JOINTS_STATE)["ok"] == 5

    runner = CliRunner()
    keys = ["--action-key", JOINTS_ACTION, "--state-key", JOINTS_STATE]
    r = runner.invoke(app, ["data", "info", str(renamed), "--json", *keys])
    assert r.exit_code == 0, r.output
    assert (json.loads(r.output)["action_dim"], json.loads(r.output)["proprio_dim"]) == (5, 6)
    r = runner.invoke(app, ["data", "verify", str(renamed), *keys])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] == 5
    r = runner.invoke(app, ["data", "preview", str(renamed), "--out", str(tmp_path / "p.mp4"), *keys])
    assert r.exit_code == 0 and (tmp_path / "p.mp4").is_file()
    r = runner.invoke(app, ["data", "info", str(renamed)])
    assert r.exit_code != 0 and f"--action-key {JOINTS_ACTION}" in str(r.output) + str(r.exception)


def test_missing_or_wrong_action_and_state_names_are_errors(renamed, packed, tmp_path):
    with pytest.raises(DatasetError, match=rf"no 'action' feature \(features: .*'{JOINTS_ACTION}'.*"
                                           rf"--action-key \(e.g. --action-key {JOINTS_ACTION}\)"):
        FlexDataset(renamed)
    with pytest.raises(DatasetError, match=r"no action feature 'action.ee_pose' \(--action-key\); its features are "
                                           rf"\[.*'{JOINTS_ACTION}'"):
        FlexDataset(renamed, action_key="action.ee_pose")
    with pytest.raises(DatasetError, match=r"no proprio state feature 'observation.state' \(--state-key\); its "
                                           rf"features are \[.*'{JOINTS_STATE}'"):
        FlexDataset(renamed, action_key=JOINTS_ACTION, state_key="observation.state")
    with pytest.raises(DatasetError, match=rf"'{TOP}' \(--action-key\) is a video feature"):
        FlexDataset(renamed, action_key=TOP)
    # the default names, named explicitly, read a standard dataset as before
    ds = FlexDataset(packed, camera=TOP, action_key="action", state_key="observation.state")
    assert (ds.layout.action_key, ds.layout.state_key) == ("action", "observation.state")
    assert "action_key" not in ds.episodes[0] and "state_key" not in ds.episodes[0]


def test_action_and_state_names_are_an_error_for_flexwm_datasets(tmp_path):
    root = tmp_path / "fx"
    write_episodes(root, range(2))
    ds = FlexDataset(root, action_key="action", state_key="observation.state")  # its own names: accepted
    assert (ds.layout.action_key, ds.layout.state_key) == ("action", "observation.state")
    with pytest.raises(ConfigError, match=r"written by flexwm, which stores its action under 'action'; "
                                          r"--action-key is for datasets flexwm did not write"):
        FlexDataset(root, action_key="action.joint_positions")
    with pytest.raises(ConfigError, match=r"stores its proprio state under 'observation.state'"):
        FlexDataset(root, state_key="observation.joint_positions")
