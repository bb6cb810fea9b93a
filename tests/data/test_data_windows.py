"""Training windows: indexing, alignment of frames/actions/success, padding, outcome filter, collate, cache."""

import numpy as np
import pytest
import torch

from flexwm.data import DatasetWriter, FlexDataset, WindowDataset, collate_windows
from flexwm.errors import ConfigError, DatasetError
from tests.helpers.synth_data import SCHEMA, frame_step, make_episode

LENGTHS = {0: 12, 1: 9, 2: 3, 3: 20}  # episode 2 is shorter than the horizon


@pytest.fixture(scope="module")
def counting_ds(tmp_path_factory):
    """Episodes whose frame t has grey level 10 + 6t and whose action t is t + index/100."""
    root = tmp_path_factory.mktemp("win") / "ds"
    with DatasetWriter(root, **SCHEMA) as w:
        for i, T in LENGTHS.items():
            w.add(make_episode(i, T, counting=True))
    return FlexDataset(root)


def test_index_covers_exactly_the_full_windows(counting_ds):
    wd = WindowDataset(counting_ds, context=2, horizon=4, stride=1)
    want = [(0, i, t) for i, T in LENGTHS.items() for t in range(0, T - 4)]  # t + H <= T - 1
    assert wd.indices.dtype == np.int64 and wd.indices.shape == (len(want), 3)
    assert [tuple(r) for r in wd.indices.tolist()] == want
    strided = WindowDataset(counting_ds, context=1, horizon=4, stride=3)
    assert [tuple(r) for r in strided.indices.tolist()] == [(0, i, t) for i, T in LENGTHS.items()
                                                           for t in range(0, T - 4, 3)]


def test_item_shapes_and_alignment(counting_ds):
    C, H = 3, 4
    wd = WindowDataset(counting_ds, context=C, horizon=H)
    for k in range(len(wd)):
        item = wd[k]
        i, t = item["episode_index"], item["t"]
        T = LENGTHS[i]
        assert item["context_frames"].shape == (C, 32, 32, 3) and item["context_frames"].dtype == np.uint8
        assert item["future_frames"].shape == (H, 32, 32, 3)
        assert item["actions"].shape == (H, 4) and item["actions"].dtype == np.float32
        assert item["proprio"].shape == (C, 3) and item["future_proprio"].shape == (H, 3)
        assert item["success"].shape == (H,) and item["valid"].all()
        # frame t is the last context frame, future_frames[k] is frame t+1+k, actions[k] is a_{t+k}
        assert [frame_step(f) for f in item["context_frames"]] == [max(s, 0) for s in range(t - C + 1, t + 1)]
        assert [frame_step(f) for f in item["future_frames"]] == list(range(t + 1, t + H + 1))
        np.testing.assert_allclose(item["actions"][:, 0], np.arange(t, t + H) + i / 100, rtol=1e-6)
        ep = make_episode(i, T, counting=True)
        np.testing.assert_array_equal(item["success"], ep.success[t:t + H])
        np.testing.assert_array_equal(item["future_proprio"], ep.proprio[t + 1:t + H + 1])
        np.testing.assert_array_equal(item["context_valid"], np.arange(t - C + 1, t + 1) >= 0)
        assert item["progress"] == pytest.approx(min((t + H) / (T - 1), 1.0))
        assert item["outcome"] == ep.meta.outcome and item["task"] == ep.meta.task
        assert item["instruction"] == ep.meta.instruction and item["embodiment"] == "sawyer"
        assert item["dataset_id"] == 0


def test_pad_end_masks_steps_past_the_end(counting_ds):
    H = 4
    wd = WindowDataset(counting_ds, context=1, horizon=H, pad_end=True)
    assert [tuple(r) for r in wd.indices.tolist()] == [(0, i, t) for i, T in LENGTHS.items() for t in range(T - 1)]
    rows = {(int(i), int(t)): k for k, (_, i, t) in enumerate(wd.indices)}
    item = wd[rows[(2, 0)]]  # a 3-step episode: only frames 1 and 2 exist after t = 0
    np.testing.assert_array_equal(item["valid"], [True, True, False, False])
    assert [frame_step(f) for f in item["future_frames"]] == [1, 2, 2, 2]  # last frame repeated
    np.testing.assert_allclose(item["actions"][:, 0], [0.02, 1.02, 2.02, 0.0], rtol=1e-6)  # a_2 exists, then 0
    item = wd[rows[(0, 10)]]
    np.testing.assert_array_equal(item["valid"], [True, False, False, False])
    assert item["progress"] == 1.0


def test_outcome_filter(counting_ds):
    outcomes = {i: make_episode(i).meta.outcome for i in LENGTHS}  # 0 success, 1 failure, 2 play, 3 success
    wd = WindowDataset(counting_ds, horizon=2, outcomes=["success"])
    assert {int(i) for i in wd.indices[:, 1]} == {i for i, o in outcomes.items() if o == "success"} == {0, 3}
    wd = WindowDataset(counting_ds, horizon=2, outcomes=("failure", "play"))
    assert {int(i) for i in wd.indices[:, 1]} == {1, 2}
    with pytest.raises(ConfigError, match="unknown outcome"):
        WindowDataset(counting_ds, outcomes=["succes"])


def test_collate_and_dataloader(counting_ds):
    wd = WindowDataset([counting_ds, counting_ds], context=2, horizon=3)
    assert set(wd.indices[:, 0].tolist()) == {0, 1}
    batch = collate_windows([wd[0], wd[len(wd) - 1]])
    assert batch["context_frames"].shape == (2, 2, 32, 32, 3) and batch["context_frames"].dtype == torch.uint8
    assert batch["actions"].dtype == torch.float32 and batch["valid"].dtype == torch.bool
    assert batch["progress"].shape == (2,) and batch["dataset_id"].tolist() == [0, 1]
    assert isinstance(batch["instruction"], list) and len(batch["task"]) == 2
    loader = torch.utils.data.DataLoader(wd, batch_size=5, shuffle=True, collate_fn=collate_windows,
                                         generator=torch.Generator().manual_seed(0))
    assert sum(len(b["t"]) for b in loader) == len(wd)


def test_lru_cache_is_bounded(counting_ds, monkeypatch):
    calls = []
    load = counting_ds.load_episode
    monkeypatch.setattr(counting_ds, "load_episode", lambda i: calls.append(i) or load(i))
    wd = WindowDataset(counting_ds, horizon=2)
    for k in range(len(wd)):
        wd[k]
    assert sorted(calls) == [0, 1, 2, 3]  # each episode decoded once
    one_episode = 20 * 32 * 32 * 3 + 20 * (4 + 3 + 5) * 4 + 20
    small = WindowDataset(counting_ds, horizon=2, cache_bytes=one_episode)
    calls.clear()
    for k in range(len(small)):
        small[k]
    assert small._cache_used <= one_episode and len(small._cache) == 1
    small[0]
    assert calls[-1] == 0 and len(calls) == 5  # episode 0 was evicted and decoded again
    nocache = WindowDataset(counting_ds, horizon=2, cache_frames=False)
    nocache[0]
    assert len(nocache._cache) == 0


def test_incompatible_datasets_are_refused(counting_ds, tmp_path):
    with DatasetWriter(tmp_path / "other", **{**SCHEMA, "action_dim": 2}) as w:
        ep = make_episode(0)
        ep.actions = ep.actions[:, :2]
        w.add(ep)
    with pytest.raises(DatasetError, match="action_dim 4 vs 2"):
        WindowDataset([counting_ds, FlexDataset(tmp_path / "other")])
