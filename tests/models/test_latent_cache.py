"""Latent cache: equals direct encoding, resumes shard by shard, detects stale fingerprints, memory-maps."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from flexwm.errors import DatasetError
from flexwm.models.latent_cache import LatentCache, build_latent_cache, get_windows
from flexwm.models.tokenizer import make_tokenizer


class _Ep:
    def __init__(self, frames):
        self.frames = frames


class FakeDataset:
    """The FlexDataset surface the cache uses: len, episodes (metadata dicts), load_episode(i).frames."""

    def __init__(self, lengths, size=64, seed=0):
        rng = np.random.default_rng(seed)
        self._frames = [rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for n in lengths]
        self.episodes = [{"episode_index": i, "length": n, "instruction": "open the door"}
                         for i, n in enumerate(lengths)]
        self.image_size = (size, size)
        self.loads: list[int] = []

    def __len__(self):
        return len(self.episodes)

    def load_episode(self, i):
        self.loads.append(i)
        return _Ep(self._frames[i])


@pytest.fixture
def tok():
    return make_tokenizer("tiny", seed=0).eval()


def _direct(tok, frames):
    with torch.no_grad():
        return tok.encode(frames).numpy()


def test_round_trip_equals_direct_encoding(tmp_path, tok):
    ds = FakeDataset([7, 3, 12, 5, 9])
    cache = build_latent_cache(ds, tok, tmp_path / "c", batch_size=4, episodes_per_shard=2, progress=False)
    assert len(cache) == 5 and cache.latent_shape == (4, 8, 8) and cache.dtype == np.float16
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "c").glob("shard-*.npy")) == ["00000", "00001", "00002"]
    for i in range(5):
        ep = cache.episode(i)
        assert ep.shape == (ds.episodes[i]["length"], 4, 8, 8)
        np.testing.assert_allclose(ep.astype(np.float32), _direct(tok, ds._frames[i]), atol=2e-2, rtol=2e-3)
    np.testing.assert_array_equal(cache.frames(2, [0, 11, 11, 50]), cache.episode(2)[[0, 11, 11, 11]])
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["dataset"]["lengths"] == [7, 3, 12, 5, 9]
    assert manifest["episodes"][3] == {"shard": 1, "offset": 12, "length": 5}
    assert manifest["tokenizer"]["fingerprint"] == tok.fingerprint()


def test_memory_mapped_access_and_pickling(tmp_path, tok):
    ds = FakeDataset([6, 6, 6])
    build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=2, dtype="float32", progress=False)
    cache = LatentCache(tmp_path / "c", tokenizer=tok, dataset=ds)
    ep = cache.episode(1)
    assert isinstance(ep.base, np.memmap) or isinstance(ep, np.memmap)
    assert not ep.flags.writeable
    assert len(cache._shards) == 1  # only the shard holding episode 1 was opened
    clone = pickle.loads(pickle.dumps(cache))  # a DataLoader worker re-opens the maps, it does not copy them
    assert clone._shards == {} and len(pickle.dumps(cache)) < 20_000
    np.testing.assert_array_equal(clone.episode(1), ep)
    np.testing.assert_allclose(ep, _direct(tok, ds._frames[1]), atol=1e-5)


def test_existing_cache_is_reused_and_removed_shard_is_rebuilt_alone(tmp_path, tok):
    ds = FakeDataset([4, 5, 6, 7, 8])
    first = build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=2, progress=False)
    assert ds.loads == [0, 1, 2, 3, 4]
    before = {i: np.array(first.episode(i)) for i in range(5)}
    ds.loads.clear()
    build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=2, progress=False)
    assert ds.loads == []  # matching manifest: nothing re-encoded
    shard1 = tmp_path / "c" / first.manifest["shards"][1]["file"]
    shard1.unlink()
    with pytest.raises(DatasetError, match="missing or damaged"):
        LatentCache(tmp_path / "c").episode(2)
    again = build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=2, progress=False)
    assert ds.loads == [2, 3]  # only the removed shard's episodes
    for i in range(5):
        np.testing.assert_array_equal(again.episode(i), before[i])


def test_interrupted_build_resumes(tmp_path, tok):
    ds = FakeDataset([4, 4, 4, 4])

    class Crash(Exception):
        pass

    real = ds.load_episode

    def flaky(i):
        if i == 2:
            raise Crash
        return real(i)

    ds.load_episode = flaky
    with pytest.raises(Crash):
        build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=1, progress=False)
    assert not (tmp_path / "c" / "manifest.json").exists()  # manifest only after every shard
    with pytest.raises(DatasetError, match="build_latent_cache"):
        LatentCache(tmp_path / "c")
    ds.load_episode = real
    ds.loads.clear()
    build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=1, progress=False)
    assert ds.loads == [2, 3]


def test_fingerprint_mismatches(tmp_path, tok):
    ds = FakeDataset([5, 5])
    build_latent_cache(ds, tok, tmp_path / "c", progress=False)
    other = make_tokenizer("tiny", seed=1).eval()
    with pytest.raises(DatasetError, match="made by tokenizer .* but the given tokenizer"):
        LatentCache(tmp_path / "c", tokenizer=other)
    with pytest.raises(DatasetError, match=f"made by tokenizer {tok.fingerprint()}, not {other.fingerprint()}"):
        build_latent_cache(ds, other, tmp_path / "c", on_mismatch="error", progress=False)
    # rebuilding for the new tokenizer replaces the latents and drops the stale shard
    rebuilt = build_latent_cache(ds, other, tmp_path / "c", progress=False)
    assert rebuilt.tokenizer_fingerprint == other.fingerprint()
    assert len(list((tmp_path / "c").glob("shard-*.npy"))) == 1
    np.testing.assert_allclose(rebuilt.episode(0).astype(np.float32), _direct(other, ds._frames[0]), atol=2e-2)
    # a changed dataset (one more episode) is detected too
    bigger = FakeDataset([5, 5, 3])
    with pytest.raises(DatasetError, match="2 episodes .* not 3 episodes"):
        build_latent_cache(bigger, other, tmp_path / "c", on_mismatch="error", progress=False)
    with pytest.raises(DatasetError, match="another dataset"):
        LatentCache(tmp_path / "c", dataset=bigger)


def test_appended_episodes_reuse_complete_shards(tmp_path, tok):
    ds = FakeDataset([4, 5, 6])
    build_latent_cache(ds, tok, tmp_path / "c", episodes_per_shard=2, progress=False)
    grown = FakeDataset([4, 5, 6, 3])  # same first episodes (same seed), one appended
    cache = build_latent_cache(grown, tok, tmp_path / "c", episodes_per_shard=2, progress=False)
    assert grown.loads == [2, 3] and len(cache) == 4  # shard 0 (episodes 0, 1) was reused
    assert len(list((tmp_path / "c").glob("shard-*.npy"))) == 2
    np.testing.assert_allclose(cache.episode(3).astype(np.float32), _direct(tok, grown._frames[3]), atol=2e-2)


def test_length_mismatch_is_reported(tmp_path, tok):
    ds = FakeDataset([5, 5])
    ds.episodes[1]["length"] = 6
    with pytest.raises(DatasetError, match="episode 1 has 5 frames but its metadata says 6"):
        build_latent_cache(ds, tok, tmp_path / "c", progress=False)


def test_windows_follow_context_and_frame_stride(tmp_path, tok):
    ds = FakeDataset([10, 6])
    cache = build_latent_cache(ds, tok, tmp_path / "c", dtype="float32", progress=False)
    w = get_windows(cache, [[0, 0, 4], [0, 1, 0], [0, 1, 3]], context=2, horizon=4, frame_stride=2)
    assert w["context"].shape == (3, 2, 4, 8, 8) and w["future"].shape == (3, 2, 4, 8, 8)
    e0, e1 = np.asarray(cache.episode(0)), np.asarray(cache.episode(1))
    np.testing.assert_array_equal(w["context"][0], e0[[2, 4]])
    np.testing.assert_array_equal(w["future"][0], e0[[6, 8]])
    np.testing.assert_array_equal(w["context"][1], e1[[0, 0]])  # before the start: frame 0 repeated
    np.testing.assert_array_equal(w["context_valid"][1], [False, True])
    np.testing.assert_array_equal(w["future"][2], e1[[5, 5]])  # past the end: last frame, marked invalid
    np.testing.assert_array_equal(w["valid"][2], [True, False])
    # a list of caches is indexed by the dataset id
    w2 = get_windows([cache, cache], [[1, 0, 4]], context=2, horizon=4, frame_stride=2)
    np.testing.assert_array_equal(w2["future"][0], w["future"][0])
    with pytest.raises(IndexError, match="dataset 1 but 1 latent cache"):
        cache.windows([[1, 0, 4]], 2, 4, 2)
