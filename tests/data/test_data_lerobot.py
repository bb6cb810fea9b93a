"""The LeRobot v3 writer/reader: round trip, layout and column names, resume, schema checks, damage reports.

`ds4` is in the one-episode-per-file layout of datasets flexwm wrote before packing (still read and appended to),
so damage lands in one episode's file; the packed layout the writer now writes: test_data_packed.py."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flexwm.data import DatasetWriter, FlexDataset, verify
from flexwm.data.video import decode_video, encode_video
from flexwm.errors import DatasetError
from tests.helpers.synth_data import SCHEMA, make_episode, smooth_frames, write_episodes, write_legacy_episodes

VIDEO = "observation.images.main"


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def drop_checksums(root: Path) -> None:
    """Make `root` look like a dataset written before per-file checksums existed."""
    for path in (root / "meta/episodes").rglob("file-*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["flexwm/data_sha256", "flexwm/video_sha256"]), path)


@pytest.fixture
def ds4(tmp_path):
    root = tmp_path / "ds"
    write_legacy_episodes(root, range(4))
    return root


@pytest.fixture(params=["checksums", "no-checksums"])
def ds4_any(request, tmp_path):
    """ds4 with and without per-file checksums: damage is caught by the checksum, and without one (older
    datasets) by the structural checks."""
    root = tmp_path / "ds"
    write_legacy_episodes(root, range(4))
    if request.param == "no-checksums":
        drop_checksums(root)
    return root


def sha_or(msg: str) -> str:
    return rf"(?:is damaged: its sha256 differs|{msg})"


def test_round_trip(ds4):
    ds = FlexDataset(ds4)
    assert len(ds) == 4 and ds.num_frames == sum(make_episode(i).length for i in range(4))
    for i in range(4):
        want, got = make_episode(i), ds.load_episode(i)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.proprio, want.proprio)
        np.testing.assert_array_equal(got.state, want.state)
        np.testing.assert_array_equal(got.success, want.success)
        assert got.actions.dtype == np.float32 and got.success.dtype == bool
        assert got.meta == want.meta and got.fps == want.fps
        assert got.frames.shape == want.frames.shape and got.frames.dtype == np.uint8
        # measured on these 32x32 gradients (h264 crf 18, yuv420p): mean abs error 2.3-2.4, PSNR 38.5-38.8 dB
        err = np.abs(got.frames.astype(int) - want.frames.astype(int)).mean()
        assert err < 3.0, err
        assert psnr(got.frames, want.frames) > 37


def test_codec_error_bounds_64px(tmp_path):
    """The numbers quoted in flexwm/data/video.py (64x64, crf 18)."""
    smooth = smooth_frames(30, 64, 64)
    edges = np.full((30, 64, 64, 3), (90, 110, 130), np.uint8)  # flat scene, moving sharp coloured boxes
    for t in range(30):
        edges[t, 10:30, t:t + 12] = (220, 40, 40)
        edges[t, 36:50, 20:44] = (40, 200, 60)
    errs = {}
    for name, frames in (("smooth", smooth), ("edges", edges)):
        encode_video(frames, tmp_path / f"{name}.mp4", fps=10)
        back = decode_video(tmp_path / f"{name}.mp4", size=(64, 64))
        errs[name] = (np.abs(back.astype(int) - frames.astype(int)).mean(), psnr(back, frames))
    # measured: smooth mae 1.65 / 41.8 dB; edges mae 2.40 / 32.7 dB (max error ~80 on box edges: yuv420p
    # halves the colour resolution; crf 0 gives 1.44 / 43.1 and 2.36 / 32.8, so the codec adds little)
    assert errs["smooth"][0] < 2.0 and errs["smooth"][1] > 40, errs
    assert errs["edges"][0] < 3.0 and errs["edges"][1] > 31, errs


def test_odd_image_size_and_empty_vectors(tmp_path):
    ep = make_episode(0, h=17, w=23)
    ep.proprio, ep.state = ep.proprio[:, :0], ep.state[:, :0]
    with DatasetWriter(tmp_path / "odd", **{**SCHEMA, "image_size": (17, 23), "proprio_dim": 0,
                                            "state_dim": 0}) as w:
        w.add(ep)
    got = FlexDataset(tmp_path / "odd").load_episode(0)
    assert got.frames.shape == (ep.length, 17, 23, 3) and got.proprio.shape == (ep.length, 0)
    assert np.abs(got.frames.astype(int) - ep.frames.astype(int)).mean() < 4  # measured 3.0 (steep gradient)


def test_layout_and_lerobot_names(ds4):
    for rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-003.parquet",
                "data/chunk-000/file-003.parquet", f"videos/{VIDEO}/chunk-000/file-003.mp4"):
        assert (ds4 / rel).is_file(), rel
    info = json.loads((ds4 / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["robot_type"] == "sawyer"
    assert (info["total_episodes"], info["total_tasks"], info["fps"]) == (4, 3, 10)
    assert info["total_frames"] == sum(make_episode(i).length for i in range(4))
    assert info["chunks_size"] == 1000 and info["splits"] == {"train": "0:4"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    for k in ("data_files_size_in_mb", "video_files_size_in_mb"):
        assert isinstance(info[k], int)
    feats = info["features"]
    assert feats[VIDEO]["dtype"] == "video" and feats[VIDEO]["shape"] == [32, 32, 3]
    assert feats[VIDEO]["names"] == ["height", "width", "channels"]
    assert feats[VIDEO]["info"]["video.codec"] == "h264" and feats[VIDEO]["info"]["video.pix_fmt"] == "yuv420p"
    assert feats["action"]["shape"] == [4] and feats["observation.state"]["shape"] == [3]
    assert feats["flexwm.env_state"]["shape"] == [5] and feats["next.success"]["dtype"] == "bool"
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[k]["shape"] == [1]
    fx = info["flexwm"]
    assert (fx["image_size"], fx["action_dim"], fx["proprio_dim"], fx["state_dim"]) == ([32, 32], 4, 3, 5)
    assert fx["action_low"] == [-1.0] * 4 and fx["action_high"] == [1.0] * 4

    data = pq.read_table(ds4 / "data/chunk-000/file-001.parquet")
    assert set(data.column_names) == {"observation.state", "flexwm.env_state", "action", "next.success",
                                      "flexwm.outcome", "timestamp", "frame_index", "episode_index", "index",
                                      "task_index"}
    T = make_episode(1).length
    np.testing.assert_allclose(data["timestamp"].to_numpy(), np.arange(T) / 10, rtol=1e-6)

    ep = pq.read_table(ds4 / "meta/episodes/chunk-000/file-002.parquet").to_pylist()[0]
    lerobot = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
               "dataset_to_index", f"videos/{VIDEO}/chunk_index", f"videos/{VIDEO}/file_index",
               f"videos/{VIDEO}/from_timestamp", f"videos/{VIDEO}/to_timestamp", "meta/episodes/chunk_index",
               "meta/episodes/file_index", "stats/action/mean", "stats/observation.state/std"]
    flexwm = ["outcome", "source", "noise", "embodiment", "env_task", "instruction", "seed", "flexwm/extra"]
    assert set(lerobot + flexwm) <= set(ep)
    assert ep["tasks"] == [make_episode(2).meta.instruction] == [ep["instruction"]]
    assert (ep["data/file_index"], ep[f"videos/{VIDEO}/file_index"], ep["meta/episodes/file_index"]) == (2, 2, 2)
    assert ep[f"videos/{VIDEO}/to_timestamp"] == pytest.approx(make_episode(2).length / 10)
    assert json.loads(ep["flexwm/extra"]) == {"job_id": "job-2"}

    tasks = pq.read_table(ds4 / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas: index `task`
    assert FlexDataset(ds4).task_list() == tasks["task"].to_pylist() == ["open the door", "press the button", ""]
    assert data["task_index"].to_pylist() == [1] * T


def test_episode_ranges_and_stats(ds4):
    ds = FlexDataset(ds4)
    ends = 0
    for i, ep in enumerate(ds.episodes):
        assert ep["episode_index"] == i and ep["dataset_from_index"] == ends
        ends = ep["dataset_to_index"]
        assert ends - ep["dataset_from_index"] == ep["length"] == make_episode(i).length
        data = pq.read_table(ds4 / f"data/chunk-000/file-{i:03d}.parquet")
        np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(ep["dataset_from_index"], ends))
    assert ends == ds.num_frames == ds.meta["total_frames"]
    stats = json.loads((ds4 / "meta/stats.json").read_text())
    acts = np.concatenate([make_episode(i).actions for i in range(4)]).astype(np.float64)
    state = np.concatenate([make_episode(i).state for i in range(4)]).astype(np.float64)
    for key, x in (("action", acts), ("flexwm.env_state", state)):
        np.testing.assert_allclose(stats[key]["mean"], x.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(stats[key]["std"], x.std(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats[key]["min"], x.min(0))
        np.testing.assert_allclose(stats[key]["max"], x.max(0))
        assert stats[key]["count"] == [len(x)]


def test_resume_appends_with_contiguous_indices(ds4):
    write_episodes(ds4, range(4, 7))
    ds = FlexDataset(ds4)
    assert [e["episode_index"] for e in ds.episodes] == list(range(7))
    assert [e["extra"]["job_id"] for e in ds.episodes] == [f"job-{i}" for i in range(7)]
    np.testing.assert_array_equal(ds.load_episode(5).actions, make_episode(5).actions)
    stats = json.loads((ds4 / "meta/stats.json").read_text())
    acts = np.concatenate([make_episode(i).actions for i in range(7)]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], acts.mean(0), rtol=1e-6)  # recomputed across the resume
    assert verify(ds4)["damaged"] == []


def test_schema_mismatch_on_reopen_names_each_field(ds4):
    before = sorted(p.name for p in (ds4 / "meta").iterdir())
    with pytest.raises(DatasetError) as e:
        DatasetWriter(ds4, **{**SCHEMA, "action_dim": 2, "fps": 20, "embodiment": "pusht",
                              "action_low": None, "action_high": None})
    msg = str(e.value)
    assert "action dim 4 but 2" in msg and "fps 10 but 20" in msg and "embodiment sawyer but pusht" in msg
    assert "new --out" in msg and str(ds4) in msg
    with pytest.raises(DatasetError, match=r"image size \[32, 32\] but \[64, 64\]"):
        DatasetWriter(ds4, **{**SCHEMA, "image_size": (64, 64)})
    assert sorted(p.name for p in (ds4 / "meta").iterdir()) == before and len(FlexDataset(ds4)) == 4


def test_non_dataset_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="not a flexwm dataset"):
        DatasetWriter(tmp_path, **SCHEMA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(DatasetError, match="not a flexwm dataset"):
        FlexDataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        FlexDataset(tmp_path / "missing")


def test_empty_or_interrupted_new_directory_is_usable(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "killed" / "meta").mkdir(parents=True)  # killed while writing the very first info.json
    (tmp_path / "killed" / "meta" / ".info.json.abc.tmp").write_text("{")
    for name in ("empty", "killed"):
        with DatasetWriter(tmp_path / name, **SCHEMA) as w:
            assert w.add(make_episode(0)) == 0
        assert len(FlexDataset(tmp_path / name)) == 1 and verify(tmp_path / name)["notes"] == []
    with pytest.raises(DatasetError, match="is a file, not a directory"):
        DatasetWriter(tmp_path / "killed" / "meta" / "info.json", **SCHEMA)


def test_read_only_directory_is_reported(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits
            pytest.skip("running as root: a read-only mode does not stop writes (see the /sys test)")
        with pytest.raises(DatasetError, match="cannot write to dataset directory"):
            DatasetWriter(ro / "ds", **SCHEMA)
    finally:
        ro.chmod(0o755)


def test_unwritable_location_is_reported_even_for_root():
    target = Path("/sys/flexwm-test-dataset")
    if not Path("/sys").is_dir() or target.exists():
        pytest.skip("no read-only /sys here")
    with pytest.raises(DatasetError, match="cannot write to dataset directory .*flexwm-test-dataset"):
        DatasetWriter(target, **SCHEMA)


def test_second_writer_is_refused(tmp_path):
    with DatasetWriter(tmp_path / "ds", **SCHEMA) as w:
        w.add(make_episode(0))
        with pytest.raises(DatasetError, match="another process is writing"):
            DatasetWriter(tmp_path / "ds", **SCHEMA)
    with DatasetWriter(tmp_path / "ds", **SCHEMA) as w:  # released on close
        assert w.add(make_episode(1)) == 1


def test_bad_episode_is_rejected_and_nothing_written(tmp_path):
    with DatasetWriter(tmp_path / "ds", **SCHEMA) as w:
        w.add(make_episode(0))
        ep = make_episode(1)
        ep.actions = ep.actions[:, :2]
        with pytest.raises(DatasetError, match=r"actions has shape \(13, 2\), expected \(13, 4\)"):
            w.add(ep)
        ep = make_episode(2)
        ep.proprio[3, 1] = np.nan
        with pytest.raises(DatasetError, match=r"seed 2\) .*proprio has NaN/inf values \(first at step 3\)"):
            w.add(ep)
        assert w.add(make_episode(3)) == 1
    assert len(FlexDataset(tmp_path / "ds")) == 2 and verify(tmp_path / "ds")["damaged"] == []


def test_orphans_and_stale_meta_are_ignored_then_cleaned(ds4):
    # what a kill after the data/video renames but before the metadata file leaves behind
    shutil.copy(ds4 / "data/chunk-000/file-001.parquet", ds4 / "data/chunk-000/file-004.parquet")
    shutil.copy(ds4 / f"videos/{VIDEO}/chunk-000/file-001.mp4", ds4 / f"videos/{VIDEO}/chunk-000/file-004.mp4")
    (ds4 / "meta/episodes/chunk-000/.file-004.parquet.x1.tmp").write_bytes(b"partial")
    (ds4 / "data/chunk-000/.file-005.parquet.x2.tmp").write_bytes(b"partial")
    info = json.loads((ds4 / "meta/info.json").read_text())
    (ds4 / "meta/info.json").write_text(json.dumps({**info, "total_episodes": 9, "total_frames": 1}))
    ds = FlexDataset(ds4)
    assert len(ds) == 4 and ds.meta["total_episodes"] == 4 and ds.num_frames == info["total_frames"]
    report = verify(ds4)
    assert report["damaged"] == [] and report["ok"] == 4
    assert any("stale" in n for n in report["notes"]) and any("orphaned" in n for n in report["notes"])
    write_episodes(ds4, [4])
    assert not (ds4 / "data/chunk-000/.file-005.parquet.x2.tmp").exists()
    assert not (ds4 / "meta/episodes/chunk-000/.file-004.parquet.x1.tmp").exists()
    np.testing.assert_array_equal(FlexDataset(ds4).load_episode(4).actions, make_episode(4).actions)
    assert verify(ds4) == {**verify(ds4), "damaged": [], "notes": []}


def test_corrupt_parquet_names_the_file(ds4_any):
    ds4 = ds4_any
    path = ds4 / "data/chunk-000/file-002.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ds = FlexDataset(ds4)
    with pytest.raises(DatasetError, match=r"episode 2's data file .*file-002\.parquet is damaged.*flexwm data verify"):
        ds.load_episode(2)
    ds.load_episode(1)  # the others still load
    report = verify(ds4)
    assert [d["episode_index"] for d in report["damaged"]] == [2] and report["ok"] == 3
    assert "file-002.parquet" in report["damaged"][0]["error"]


def test_truncated_or_missing_mp4_names_the_file(ds4_any):
    ds4 = ds4_any
    path = ds4 / f"videos/{VIDEO}/chunk-000/file-001.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(DatasetError, match=r"episode 1's video .*file-001\.mp4 " + sha_or("cannot be decoded")):
        FlexDataset(ds4).load_episode(1)
    (ds4 / f"videos/{VIDEO}/chunk-000/file-003.mp4").unlink()
    with pytest.raises(DatasetError, match=r"episode 3's video .*file-003\.mp4 is missing"):
        FlexDataset(ds4).load_episode(3)
    assert [d["episode_index"] for d in verify(ds4)["damaged"]] == [1, 3]


def test_frame_count_mismatch_is_caught(ds4_any):
    ds4 = ds4_any
    # episode 0 has 12 steps, episode 1 has 13: swap in the wrong (but valid) video
    shutil.copy(ds4 / f"videos/{VIDEO}/chunk-000/file-001.mp4", ds4 / f"videos/{VIDEO}/chunk-000/file-000.mp4")
    with pytest.raises(DatasetError, match=r"file-000\.mp4 " + sha_or(r"decodes to 13 frames .* has 12 steps")):
        FlexDataset(ds4).load_episode(0)


def test_metadata_cannot_point_elsewhere(ds4):
    drop_checksums(ds4)  # another episode's file would fail its checksum; without one the row count catches it
    path = ds4 / "meta/episodes/chunk-000/file-001.parquet"
    table = pq.read_table(path)
    col = table.schema.get_field_index("data/chunk_index")
    pq.write_table(table.set_column(col, "data/chunk_index", [[-1]]), path)
    with pytest.raises(DatasetError, match="episode 1's metadata has an invalid file index"):
        FlexDataset(ds4).load_episode(1)
    col = table.schema.get_field_index("data/file_index")
    pq.write_table(table.set_column(col, "data/file_index", [[2]]), path)  # another episode's file
    with pytest.raises(DatasetError, match=r"episode 1's data file .*file-002\.parquet has 14 rows"):
        FlexDataset(ds4).load_episode(1)


def test_missing_episode_metadata_in_the_middle_is_reported(ds4):
    (ds4 / "meta/episodes/chunk-000/file-001.parquet").unlink()
    with pytest.raises(DatasetError, match="metadata of episode 1 is missing but episode 3 exists"):
        FlexDataset(ds4)


def test_a_dataset_written_before_packing_still_reads(tmp_path):
    """tests/fixtures/flexwm_one_per_file was written by flexwm before the writer packed episodes (commit 7395e12,
    `write_episodes(root, range(3))`): it reads, verifies, and a writer appends to it in its own layout."""
    root = tmp_path / "old"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "flexwm_one_per_file", root)
    ds = FlexDataset(root)
    assert ds.flexwm_layout and not ds.packed_by_flexwm and len(ds) == 3
    for i in range(3):
        got, want = ds.load_episode(i), make_episode(i)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.state, want.state)
        assert got.meta == want.meta and np.abs(got.frames.astype(int) - want.frames).mean() < 4
    assert verify(root) == {**verify(root), "damaged": [], "notes": []}
    write_episodes(root, [3])
    assert (root / "data/chunk-000/file-003.parquet").is_file() and FlexDataset(root).flexwm_layout
    np.testing.assert_array_equal(FlexDataset(root).load_episode(3).actions, make_episode(3).actions)
