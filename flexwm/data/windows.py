"""Training windows over one or more datasets: context frames, future frames and the actions between them.

For an episode of T steps (frames 0..T-1, action a_t taken at frame t moves it to frame t+1) the window at
time t holds
    context frames   t-C+1 .. t        (before frame 0: frame 0 repeated; `context_valid` marks real ones)
    future frames    t+1 .. t+H
    actions          a_t .. a_{t+H-1}   (actions[k] moves frame t+k to future_frames[k])
    success          success[t+k]       (the simulator's flag after actions[k], i.e. at future_frames[k])
With pad_end=False, t runs over 0, stride, ... <= T-1-H (every future frame exists). With pad_end=True, t runs
up to T-2 and steps past the episode end are padded (last frame and proprio repeated, action 0) and marked
False in `valid`, so episodes shorter than H+1 steps still give windows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from flexwm.data.episode import OUTCOMES, Episode
from flexwm.data.reader import FlexDataset
from flexwm.errors import ConfigError, DatasetError


class WindowDataset(Dataset):
    """All (dataset, episode, t) windows of `datasets`, optionally only episodes whose outcome is in `outcomes`.

    Each episode's video is decoded once and kept in an LRU cache of at most `cache_bytes` (per process, so
    per DataLoader worker) when `cache_frames` is True.
    """

    def __init__(self, datasets: FlexDataset | Sequence[FlexDataset], context: int = 1, horizon: int = 8,
                 stride: int = 1, outcomes: Sequence[str] | None = None, cache_frames: bool = True,
                 pad_end: bool = False, cache_bytes: int = 1 << 30):
        self.datasets = [datasets] if isinstance(datasets, FlexDataset) else list(datasets)
        if not self.datasets:
            raise ConfigError("WindowDataset needs at least one dataset")
        if context < 1 or horizon < 1 or stride < 1:
            raise ConfigError(f"context, horizon and stride must be >= 1, got {context}, {horizon}, {stride}")
        if outcomes is not None:
            outcomes = [outcomes] if isinstance(outcomes, str) else list(outcomes)
            bad = [o for o in outcomes if o not in OUTCOMES]
            if bad:
                raise ConfigError(f"unknown outcome(s) {bad}; choose from {list(OUTCOMES)}")
        self._check_compatible()
        self.context, self.horizon, self.stride, self.pad_end = context, horizon, stride, pad_end
        self.outcomes = outcomes
        self.cache_frames, self.cache_bytes = cache_frames, cache_bytes
        self._cache: OrderedDict[tuple[int, int], Episode] = OrderedDict()
        self._cache_used = 0

        rows = []
        for d, ds in enumerate(self.datasets):
            for ep in ds.episodes:
                if outcomes is not None and ep["outcome"] not in outcomes:
                    continue
                T = int(ep["length"])
                last = T - 2 if pad_end else T - 1 - horizon
                for t in range(0, last + 1, stride):
                    rows.append((d, int(ep["episode_index"]), t))
        self.indices = np.asarray(rows, dtype=np.int64).reshape(-1, 3)  # (N, 3): dataset_id, episode, t

    def _check_compatible(self) -> None:
        first = self.datasets[0]
        for ds in self.datasets[1:]:
            bad = [f"{name} {getattr(first, name)} vs {getattr(ds, name)}" for name in
                   ("image_size", "action_dim", "proprio_dim") if getattr(first, name) != getattr(ds, name)]
            if bad:
                raise DatasetError(f"datasets {first.root} and {ds.root} cannot be batched together ("
                                   + "; ".join(bad) + "); train on datasets with the same image size and dims")

    def __len__(self) -> int:
        return len(self.indices)

    def episode(self, dataset_id: int, episode_index: int) -> Episode:
        """The decoded episode, from the LRU cache when possible."""
        key = (dataset_id, episode_index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        ep = self.datasets[dataset_id].load_episode(episode_index)
        if self.cache_frames:
            size = sum(a.nbytes for a in (ep.frames, ep.actions, ep.proprio, ep.state, ep.success))
            while self._cache and self._cache_used + size > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= sum(a.nbytes for a in (old.frames, old.actions, old.proprio, old.state,
                                                           old.success))
            if size <= self.cache_bytes:
                self._cache[key] = ep
                self._cache_used += size
        return ep

    def __getitem__(self, k: int) -> dict:
        d, i, t = (int(v) for v in self.indices[k])
        ep = self.episode(d, i)
        T, C, H = ep.length, self.context, self.horizon
        ctx = np.arange(t - C + 1, t + 1)
        fut = np.arange(t + 1, t + H + 1)
        act = np.arange(t, t + H)
        valid = fut <= T - 1
        act_c = np.minimum(act, T - 1)
        actions = ep.actions[act_c] * (act <= T - 1)[:, None]
        return {
            "context_frames": ep.frames[np.maximum(ctx, 0)],
            "future_frames": ep.frames[np.minimum(fut, T - 1)],
            "actions": actions.astype(np.float32),
            "proprio": ep.proprio[np.maximum(ctx, 0)],
            "future_proprio": ep.proprio[np.minimum(fut, T - 1)],
            "success": ep.success[act_c].astype(bool),
            "valid": valid,
            "context_valid": ctx >= 0,
            "progress": np.float32(min(max((t + H) / max(T - 1, 1), 0.0), 1.0)),
            "instruction": ep.meta.instruction,
            "outcome": ep.meta.outcome,
            "embodiment": ep.meta.embodiment,
            "task": ep.meta.task,
            "episode_index": i,
            "t": t,
            "dataset_id": d,
        }


def collate_windows(items: list[dict]) -> dict:
    """Stack a list of window items: arrays and numbers become torch tensors, strings stay lists."""
    out = {}
    for key, first in items[0].items():
        values = [it[key] for it in items]
        if isinstance(first, str):
            out[key] = values
        elif isinstance(first, np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        else:
            out[key] = torch.as_tensor(np.asarray(values))
    return out
