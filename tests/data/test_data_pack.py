"""Packing a dataset in flexwm's older one-episode-per-file layout as LeRobot lays datasets out (as the writer now
writes them): same pixels, labels and checks; all or nothing; the packed copy is appended to like any other."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from flexwm.data import DatasetWriter, FlexDataset, dataset_info, verify
from flexwm.data.pack import pack_dataset
from flexwm.errors import DatasetError
from tests.helpers.synth_data import SCHEMA, make_episode, write_legacy_episodes

VIDEO = "observation.images.main"


@pytest.fixture
def packed(tmp_path):
    write_legacy_episodes(tmp_path / "src", range(7))
    return pack_dataset(tmp_path / "src", tmp_path / "packed", episodes_per_file=3)


def test_packed_copy_holds_the_same_episodes(packed, tmp_path):
    src, dst = FlexDataset(tmp_path / "src"), FlexDataset(packed)
    assert not dst.flexwm_layout and len(dst) == 7 and dst.num_frames == src.num_frames
    assert sorted(p.name for p in (packed / "data/chunk-000").iterdir()) == [f"file-00{k}.parquet" for k in range(3)]
    assert len(list((packed / f"videos/{VIDEO}/chunk-000").iterdir())) == 3
    assert pq.read_metadata(packed / "meta/episodes/chunk-000/file-001.parquet").num_rows == 3
    for i in range(7):
        a, b = src.load_episode(i), dst.load_episode(i)
        np.testing.assert_array_equal(a.frames, b.frames)  # remuxed, not re-encoded
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.state, b.state)
        assert a.meta == b.meta == make_episode(i).meta
    assert dataset_info(packed)["by_outcome"] == dataset_info(tmp_path / "src")["by_outcome"]
    assert verify(packed) == {**verify(packed), "damaged": [], "notes": []}
    assert json.loads((packed / "meta/stats.json").read_text()) == json.loads(
        (tmp_path / "src/meta/stats.json").read_text())


def test_damage_in_a_packed_file_is_caught_by_its_checksum(packed):
    path = packed / f"videos/{VIDEO}/chunk-000/file-001.mp4"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = verify(packed)
    assert [d["episode_index"] for d in report["damaged"]] == [3, 4, 5]
    assert "sha256 differs" in report["damaged"][0]["error"]


def test_packing_is_all_or_nothing_and_never_overwrites(tmp_path):
    write_legacy_episodes(tmp_path / "src", range(3))
    (tmp_path / ".packed.packing.tmp" / "data").mkdir(parents=True)  # what a kill during packing leaves
    (tmp_path / ".packed.packing.tmp" / "data" / "junk.parquet").write_bytes(b"partial")
    pack_dataset(tmp_path / "src", tmp_path / "packed")
    assert not (tmp_path / ".packed.packing.tmp").exists()
    assert len(FlexDataset(tmp_path / "packed")) == 3
    assert len(list((tmp_path / "packed/data/chunk-000").iterdir())) == 1  # everything fits in one file
    with pytest.raises(DatasetError, match="exists; choose a new directory"):
        pack_dataset(tmp_path / "src", tmp_path / "packed")
    with pytest.raises(DatasetError, match="not in flexwm's one-episode-per-file layout"):
        pack_dataset(tmp_path / "packed", tmp_path / "again")
    with DatasetWriter(tmp_path / "packed", **SCHEMA) as w:  # appended to as the writer's own packed datasets
        assert w.add(make_episode(3)) == 3
    ds = FlexDataset(tmp_path / "packed")
    assert len(ds) == 4 and ds.load_episode(3).meta == make_episode(3).meta
    assert len(list((tmp_path / "packed/data/chunk-000").iterdir())) == 2  # a resumed writer starts a new file
    shutil.copy(tmp_path / "src/data/chunk-000/file-000.parquet", tmp_path / "src/data/chunk-000/file-001.parquet")
    with pytest.raises(DatasetError, match=r"episodes \[1\] are damaged"):
        pack_dataset(tmp_path / "src", tmp_path / "other")
    assert not (tmp_path / "other").exists()
