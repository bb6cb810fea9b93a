"""The writer packs episodes as LeRobot does: many per data parquet, mp4 and meta/episodes file, rolling over at
a size bound; a packed episode is read by seeking into its mp4; opening a dataset reads meta/ only."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

import flexwm.data.writer as writer_module
from flexwm.data import DatasetWriter, FlexDataset, dataset_info, verify
from flexwm.data.lerobot import STAGING_DIR
from flexwm.errors import DatasetError
from tests.helpers.synth_data import SCHEMA, make_episode, write_episodes
from tests.helpers.video import count_decoded_frames

VIDEO = "observation.images.main"
MB = 0.02  # about 3-4 episodes of tests.helpers.synth_data per file


def _files(root, kind):
    pattern = {"data": "data/*/*.parquet", "video": f"videos/{VIDEO}/*/*.mp4", "meta": "meta/episodes/*/*.parquet"}
    return sorted(root.glob(pattern[kind]))


def test_episodes_are_packed_and_roll_over_at_the_size_bound(tmp_path):
    root = tmp_path / "ds"
    write_episodes(root, range(10), data_files_size_in_mb=MB, video_files_size_in_mb=MB)
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (MB, MB)
    assert info["flexwm"]["packed"] is True and info["flexwm"]["episodes_per_file"] is None
    data, videos = _files(root, "data"), _files(root, "video")
    assert 3 <= len(data) == len(videos) < 10 and not list((root / STAGING_DIR).glob("*"))
    assert [p.name for p in data] == [f"file-{k:03d}.parquet" for k in range(len(data))]

    ds = FlexDataset(root)
    assert ds.packed_by_flexwm and not ds.flexwm_layout and len(ds) == 10
    by_file: dict[int, list[int]] = {}
    for i, ep in enumerate(ds.episodes):
        assert ep["data/file_index"] == ep[f"videos/{VIDEO}/file_index"]
        by_file.setdefault(ep["data/file_index"], []).append(i)
    assert all(len(eps) >= 2 for eps in by_file.values()), by_file  # several episodes per file
    for k, eps in by_file.items():  # each file holds its episodes' rows, and their frames one after another
        rows = pq.read_table(data[k], columns=["episode_index"])["episode_index"].to_pylist()
        assert sorted(set(rows)) == eps
        t = 0.0
        for i in eps:
            ep = ds.episodes[i]
            assert ep[f"videos/{VIDEO}/from_timestamp"] == pytest.approx(t)
            t += ep["length"] / 10
            assert ep[f"videos/{VIDEO}/to_timestamp"] == pytest.approx(t)
    for i in range(10):
        got, want = ds.load_episode(i), make_episode(i)
        np.testing.assert_array_equal(got.actions, want.actions)
        np.testing.assert_array_equal(got.state, want.state)
        assert got.meta == want.meta and np.abs(got.frames.astype(int) - want.frames).mean() < 4
    rows = pq.read_table(_files(root, "meta")[0]).to_pylist()  # flexwm's labels where LeRobot keeps episode rows
    assert rows[0]["outcome"] == "success" and rows[0]["flexwm/extra"] == '{"job_id": "job-0"}'
    assert verify(root) == {**verify(root), "damaged": [], "notes": []}
    assert dataset_info(root)["format"] == "flexwm"


def test_default_bounds_put_a_small_dataset_in_one_file_and_resume_starts_the_next(tmp_path):
    root = tmp_path / "ds"
    write_episodes(root, range(4))
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (100, 500)  # LeRobot's defaults
    assert len(_files(root, "data")) == len(_files(root, "video")) == len(_files(root, "meta")) == 1
    write_episodes(root, range(4, 6))
    assert len(_files(root, "data")) == 2 and len(_files(root, "meta")) == 1  # meta/episodes grows in place
    ds = FlexDataset(root)
    assert [e["data/file_index"] for e in ds.episodes] == [0, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(ds.load_episode(5).actions, make_episode(5).actions)
    stats = json.loads((root / "meta/stats.json").read_text())
    acts = np.concatenate([make_episode(i).actions for i in range(6)]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], acts.mean(0), rtol=1e-6)
    assert np.asarray(stats[VIDEO]["q99"]).shape == (3, 1, 1)
    with pytest.raises(DatasetError, match="data_files_size_in_mb must be a positive number"):
        DatasetWriter(tmp_path / "other", **SCHEMA, data_files_size_in_mb=0)


def _counting(monkeypatch):
    """Counts every parquet file flexwm's readers open (pyarrow's readers, looked up at call time)."""
    opened = []
    for name in ("read_table", "read_schema", "read_metadata", "ParquetFile"):
        real = getattr(pq, name)
        monkeypatch.setattr(pq, name, lambda *a, _real=real, _name=name, **k: opened.append(_name) or _real(*a, **k))
    return opened


def test_opening_reads_meta_only_whatever_the_number_of_files(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_STAGED", 2)  # a file per 2 episodes, whatever their size
    opens = {}
    for n in (4, 16):
        root = tmp_path / f"n{n}"
        write_episodes(root, range(n))
        assert len(_files(root, "data")) == len(_files(root, "video")) == n // 2 and len(_files(root, "meta")) == 1
        hidden = tmp_path / f"hidden{n}"
        hidden.mkdir()
        for d in ("data", "videos"):  # no data or video file may be opened, listed or even exist at open
            shutil.move(root / d, hidden / d)
        with monkeypatch.context() as m:
            opened = _counting(m)
            ds = FlexDataset(root)
            opens[n] = len(opened)
        assert len(ds) == n and ds.num_frames == sum(make_episode(i).length for i in range(n))
        assert dataset_info(root)["episodes"] == n
        with pytest.raises(DatasetError, match="is missing"):
            ds.load_episode(0)
        for d in ("data", "videos"):
            shutil.move(hidden / d, root / d)
        np.testing.assert_array_equal(FlexDataset(root).load_episode(n - 1).actions, make_episode(n - 1).actions)
    assert opens[4] == opens[16] <= 3, opens  # meta/episodes, tasks.parquet: not one per data file


def test_an_episode_late_in_a_packed_mp4_is_reached_by_seeking(tmp_path, monkeypatch):


    root = tmp_path / "ds"
    write_episodes(root, range(8))
    ds = FlexDataset(root)
    assert {e[f"videos/{VIDEO}/file_index"] for e in ds.episodes} == {0}
    decoded = count_decoded_frames(monkeypatch)
    ep = ds.load_episode(7)
    assert ep.frames.shape[0] == make_episode(7).length
    # every episode starts with a keyframe of its own (the writer remuxes whole encoded episodes), so the seek
    # decodes at most the group of pictures before it (the previous episode), not the 95 frames before it
    before = sum(make_episode(i).length for i in range(7))
    assert len(decoded) <= make_episode(6).length + make_episode(7).length + 1 < before, len(decoded)


def test_a_packed_file_without_its_meta_commit_is_an_orphan(tmp_path):
    """What a kill while a full file is packed leaves: the packed data/video file is written, its meta/episodes
    commit is not, the episodes are still staged. Readers use the staged episodes; the next writer packs again."""
    root = tmp_path / "ds"
    w = DatasetWriter(root, **SCHEMA)
    for i in range(3):
        w.add(make_episode(i))
    w._release()  # abandoned: the 3 episodes are staged
    w._closed = True
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000/file-000.parquet").write_bytes(b"half a packed file")
    ds = FlexDataset(root)
    assert len(ds) == 3 and all(e["staged"] for e in ds.episodes)
    report = verify(root)
    assert report["damaged"] == [] and any("orphaned" in n for n in report["notes"])
    DatasetWriter(root, **SCHEMA).close()
    ds = FlexDataset(root)
    assert len(ds) == 3 and not any(e.get("staged") for e in ds.episodes)
    np.testing.assert_array_equal(ds.load_episode(2).actions, make_episode(2).actions)
    assert verify(root)["notes"] == []


def test_a_lost_metadata_file_is_reported_not_silently_dropped(tmp_path):
    root = tmp_path / "ds"
    write_episodes(root, range(4))
    _files(root, "meta")[0].unlink()
    with pytest.raises(DatasetError, match="describe 0 episodes but meta/info.json says total_episodes = 4"):
        FlexDataset(root)
