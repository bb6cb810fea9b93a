"""Frame latents computed once per (dataset, tokenizer) and cached on disk, so training never decodes video.

Layout of a cache directory:

    shard-00000-<key>.npy   latents of episodes [0, E) concatenated along time: (sum T, c, h, w), float16
    shard-00001-<key>.npy   episodes [E, 2E) ...
    manifest.json           written last: fingerprints, latent shape, dtype, and per episode (shard, offset, length)

Every file is written atomically. `<key>` hashes the tokenizer fingerprint, latent shape, dtype and the
shard's episodes (range, lengths, metadata), so a shard file that exists is complete and holds exactly these
latents: an interrupted build resumes by skipping the shards already there, and after episodes are appended
to a dataset only the shards that changed are encoded again. A manifest whose fingerprints do not match
the given dataset/tokenizer is rebuilt (or, with `on_mismatch="error"`, reported).

`LatentCache(cache_dir)` opens shards memory-mapped on first use: `episode(i)` is a zero-copy (T, c, h, w)
view and `frames(i, idx)` / `windows(...)` gather only the rows asked for, so a dataset larger than RAM
can be trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from flexwm.errors import DatasetError
from flexwm.io import atomic_write, atomic_write_json

MANIFEST = "manifest.json"
FORMAT = "flexwm-latent-cache"
VERSION = 1


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def episode_lengths(dataset: Any) -> list[int]:
    """Per-episode lengths from the metadata (`length`), or by loading an episode when it has none."""
    out = []
    for i, meta in enumerate(dataset.episodes):
        n = meta.get("length") if isinstance(meta, dict) else None
        out.append(int(n) if n is not None else len(dataset.load_episode(i).frames))
    return out


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """Episode count, per-episode lengths and a hash of the episodes' metadata."""
    lengths = episode_lengths(dataset)
    meta_hash = _sha(list(dataset.episodes))
    return {"fingerprint": _sha([len(lengths), lengths, meta_hash]), "episodes": len(lengths),
            "lengths": lengths, "meta_hash": meta_hash}


def _image_size(dataset: Any) -> tuple[int, int]:
    size = getattr(dataset, "image_size", None)
    if size is not None:
        return int(size[0]), int(size[1])
    frames = dataset.load_episode(0).frames
    return int(frames.shape[1]), int(frames.shape[2])


def _shard_ok(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return tuple(arr.shape) == shape and arr.dtype == dtype


def _save_npy(path: Path, arr: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.save(str) would append ".npy" to the temp name
            np.save(f, arr, allow_pickle=False)

    atomic_write(path, write)


@torch.inference_mode()
def _encode_episode(tokenizer: Any, frames: np.ndarray, batch_size: int, dtype: np.dtype) -> np.ndarray:
    out = []
    for s in range(0, len(frames), batch_size):
        z = tokenizer.encode(torch.from_numpy(np.ascontiguousarray(frames[s:s + batch_size])))
        out.append(z.float().cpu().numpy().astype(dtype))
    return np.concatenate(out)


def build_latent_cache(dataset: Any, tokenizer: Any, cache_dir: str | Path, *, batch_size: int = 256,
                       device: str | torch.device | None = None, episodes_per_shard: int = 64,
                       dtype: Literal["float16", "float32"] = "float16",
                       on_mismatch: Literal["rebuild", "error"] = "rebuild", progress: bool = True,
                       ) -> LatentCache:
    """Encode every frame of every episode of `dataset` (`len`, `episodes`, `load_episode(i).frames`) once.

    Resumes an interrupted build (complete shards are reused) and returns the cache unchanged when its
    manifest already matches this dataset and tokenizer. A manifest made by another tokenizer or for other
    data is rebuilt, or raises DatasetError with `on_mismatch="error"`. `device` moves the tokenizer first.
    """
    if episodes_per_shard < 1 or batch_size < 1:
        raise ValueError(f"episodes_per_shard and batch_size must be >= 1, got {episodes_per_shard}, {batch_size}")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"latent cache dtype must be 'float16' or 'float32', got {dtype!r}")
    cache_dir = Path(cache_dir)
    np_dtype = np.dtype(dtype)
    if device is not None:
        tokenizer.to(device)
    tok_fp = tokenizer.fingerprint()
    ds_info = dataset_fingerprint(dataset)
    lengths = ds_info["lengths"]
    if not lengths:
        raise DatasetError("the dataset has no episodes; collect data before building a latent cache")
    latent_shape = tuple(int(v) for v in tokenizer.latent_shape(_image_size(dataset)))

    manifest_path = cache_dir / MANIFEST
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError:
            old = {}
        try:
            problems = _mismatches(old, tok_fp, ds_info, latent_shape, dtype)
        except (KeyError, TypeError):
            problems = [f"its manifest {manifest_path} is damaged"]
        if not problems and not LatentCache(cache_dir).missing_shards():
            return LatentCache(cache_dir)
        if problems and on_mismatch == "error":
            raise DatasetError(f"latent cache {cache_dir} does not match: " + "; ".join(problems)
                               + ". Rebuild it (on_mismatch='rebuild') or use another cache_dir.")
        manifest_path.unlink()  # never leave a manifest that points at shards about to be replaced

    key = _sha([tok_fp, latent_shape, dtype])
    metas = list(dataset.episodes)
    n_eps = len(lengths)
    starts = list(range(0, n_eps, episodes_per_shard))
    bar = None
    if progress:
        from flexwm.metrics import progress_bar

        bar = progress_bar(n_eps, "latents", unit="ep", leave=False)
    was_training = getattr(tokenizer, "training", False)
    tokenizer.eval()
    shards, episodes = [], []
    try:
        for s, first in enumerate(starts):
            last = min(first + episodes_per_shard, n_eps)
            # named by what it holds, so shards of unchanged episodes survive an appended dataset
            name = f"shard-{s:05d}-{_sha([key, first, last, lengths[first:last], metas[first:last]])[:10]}.npy"
            total = sum(lengths[first:last])
            shape = (total, *latent_shape)
            offset = 0
            for i in range(first, last):
                episodes.append({"shard": s, "offset": offset, "length": lengths[i]})
                offset += lengths[i]
            shards.append({"file": name, "episodes": [first, last], "frames": total})
            if _shard_ok(cache_dir / name, shape, np_dtype):
                if bar is not None:
                    bar.update(last - first)
                continue
            parts = []
            for i in range(first, last):
                frames = np.asarray(dataset.load_episode(i).frames)
                if len(frames) != lengths[i]:
                    raise DatasetError(f"episode {i} has {len(frames)} frames but its metadata says "
                                       f"{lengths[i]}; the dataset is damaged (run `flexwm data verify`)")
                parts.append(_encode_episode(tokenizer, frames, batch_size, np_dtype))
                if bar is not None:
                    bar.update(1)
            arr = np.concatenate(parts)
            if arr.shape != shape:
                raise DatasetError(f"tokenizer produced latents {arr.shape[1:]} but latent_shape says "
                                   f"{latent_shape}; the tokenizer's latent_shape() is inconsistent")
            _save_npy(cache_dir / name, arr)
    finally:
        tokenizer.train(was_training)
        if bar is not None:
            bar.close()

    manifest = {"format": FORMAT, "version": VERSION, "latent_shape": list(latent_shape), "dtype": dtype,
                "tokenizer": {"fingerprint": tok_fp, "config": _config_dict(tokenizer)},
                "dataset": {**ds_info, "root": str(getattr(dataset, "root", ""))},
                "episodes_per_shard": episodes_per_shard, "shards": shards, "episodes": episodes}
    atomic_write_json(manifest_path, manifest)
    keep = {s["file"] for s in shards}
    for stale in cache_dir.glob("shard-*.npy"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    return LatentCache(cache_dir)


def _config_dict(tokenizer: Any) -> Any:
    cfg = getattr(tokenizer, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def _mismatches(old: dict, tok_fp: str, ds_info: dict, latent_shape: tuple, dtype: str) -> list[str]:
    if old.get("format") != FORMAT or old.get("version") != VERSION:
        return [f"manifest format {old.get('format')!r} v{old.get('version')} is not {FORMAT!r} v{VERSION}"]
    out = []
    if old["tokenizer"]["fingerprint"] != tok_fp:
        out.append(f"it was made by tokenizer {old['tokenizer']['fingerprint']}, not {tok_fp}")
    if old["dataset"]["fingerprint"] != ds_info["fingerprint"]:
        d = old["dataset"]
        out.append(f"it was made for a dataset with {d['episodes']} episodes ({sum(d['lengths'])} frames, "
                   f"metadata {d['meta_hash']}), not {ds_info['episodes']} episodes "
                   f"({sum(ds_info['lengths'])} frames, metadata {ds_info['meta_hash']})")
    if tuple(old["latent_shape"]) != tuple(latent_shape):
        out.append(f"latent shape {tuple(old['latent_shape'])} != {tuple(latent_shape)}")
    if old["dtype"] != dtype:
        out.append(f"dtype {old['dtype']} != {dtype}")
    return out


class LatentCache:
    """Read side of a latent cache: memory-mapped shards, per-episode views and window gathers."""

    def __init__(self, cache_dir: str | Path, *, tokenizer: Any = None, dataset: Any = None):
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        if not path.exists():
            raise DatasetError(f"no {MANIFEST} in {self.cache_dir}; build the cache with build_latent_cache() "
                               "(an interrupted build resumes where it stopped)")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DatasetError(f"{path} is not a flexwm latent cache manifest")
        self.latent_shape: tuple[int, int, int] = tuple(self.manifest["latent_shape"])  # type: ignore[assignment]
        self.dtype = np.dtype(self.manifest["dtype"])
        self.tokenizer_fingerprint: str = self.manifest["tokenizer"]["fingerprint"]
        self._eps = self.manifest["episodes"]
        self.lengths = np.asarray([e["length"] for e in self._eps], dtype=np.int64)
        self._shards: dict[int, np.ndarray] = {}
        if tokenizer is not None and tokenizer.fingerprint() != self.tokenizer_fingerprint:
            raise DatasetError(f"latent cache {self.cache_dir} was made by tokenizer {self.tokenizer_fingerprint} "
                               f"but the given tokenizer is {tokenizer.fingerprint()}; rebuild the cache with "
                               "build_latent_cache(dataset, tokenizer, cache_dir)")
        if dataset is not None:
            fp = dataset_fingerprint(dataset)["fingerprint"]
            if fp != self.manifest["dataset"]["fingerprint"]:
                raise DatasetError(f"latent cache {self.cache_dir} was made for another dataset (fingerprint "
                                   f"{self.manifest['dataset']['fingerprint']} vs {fp}); rebuild the cache")

    def __len__(self) -> int:
        return len(self._eps)

    def __repr__(self) -> str:
        return (f"LatentCache({str(self.cache_dir)!r}, episodes={len(self)}, frames={int(self.lengths.sum())}, "
                f"latent_shape={self.latent_shape}, dtype={self.dtype})")

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memory maps instead of copying them
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state

    def missing_shards(self) -> list[str]:
        out = []
        for s in self.manifest["shards"]:
            shape = (s["frames"], *self.latent_shape)
            if not _shard_ok(self.cache_dir / s["file"], shape, self.dtype):
                out.append(s["file"])
        return out

    def _shard(self, s: int) -> np.ndarray:
        arr = self._shards.get(s)
        if arr is None:
            info = self.manifest["shards"][s]
            path = self.cache_dir / info["file"]
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DatasetError(f"latent shard {path} is missing or damaged ({e}); rerun build_latent_cache "
                                   "to rebuild it") from e
            if arr.shape[0] != info["frames"]:
                raise DatasetError(f"latent shard {path} has {arr.shape[0]} frames, manifest says "
                                   f"{info['frames']}; rerun build_latent_cache")
            self._shards[s] = arr
        return arr

    def episode(self, i: int) -> np.ndarray:
        """Episode i's latents (T, c, h, w): a read-only memory-mapped view (np.array(...) to copy)."""
        e = self._eps[i]
        return self._shard(e["shard"])[e["offset"]: e["offset"] + e["length"]]

    def frames(self, i: int, idx: Any) -> np.ndarray:
        """Latents of episode i at time indices `idx` (any int array shape; clipped to [0, T-1]), a copy."""
        e = self._eps[i]
        idx = np.clip(np.asarray(idx, dtype=np.int64), 0, e["length"] - 1)
        return np.asarray(self._shard(e["shard"])[e["offset"] + idx])

    def windows(self, indices: Any, context: int, horizon: int, frame_stride: int) -> dict[str, np.ndarray]:
        """See `get_windows`; `indices[:, 0]` (dataset id) must be 0 here."""
        return get_windows(self, indices, context, horizon, frame_stride)


def get_windows(caches: LatentCache | Sequence[LatentCache], indices: Any, context: int, horizon: int,
                frame_stride: int) -> dict[str, np.ndarray]:
    """Gather latent windows for rows (dataset_id, episode, t) as in `flexwm.data.windows.WindowDataset`.

    Context latents are frames t - (context-1-j)*frame_stride (frame 0 repeated before the start), future
    latents frames t + (k+1)*frame_stride for k < horizon // frame_stride (last frame repeated past the end,
    marked False in `valid`). Returns float32 `context` (N, C, c, h, w), `future` (N, F, c, h, w),
    `context_valid` (N, C) and `valid` (N, F).
    """
    caches = [caches] if isinstance(caches, LatentCache) else list(caches)
    if horizon % frame_stride:
        raise ValueError(f"horizon {horizon} must be a multiple of frame_stride {frame_stride}")
    shapes = {c.latent_shape for c in caches}
    if len(shapes) != 1:
        raise DatasetError(f"latent caches have different latent shapes {sorted(shapes)}; encode every dataset "
                           "with the same tokenizer")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 3)
    ctx_off = -frame_stride * np.arange(context - 1, -1, -1)
    fut_off = frame_stride * np.arange(1, horizon // frame_stride + 1)
    offs = np.concatenate([ctx_off, fut_off])
    n, C, F = len(idx), context, len(fut_off)
    out = np.empty((n, C + F, *caches[0].latent_shape), dtype=np.float32)
    valid = np.empty((n, C + F), dtype=bool)
    for r, (d, i, t) in enumerate(idx):
        if d >= len(caches) or d < 0:
            raise IndexError(f"window row {r} names dataset {d} but {len(caches)} latent cache(s) were given")
        T = int(caches[d].lengths[i])
        pos = t + offs
        valid[r] = (pos >= 0) & (pos <= T - 1)
        out[r] = caches[d].frames(int(i), pos)
    return {"context": out[:, :C], "future": out[:, C:], "context_valid": valid[:, :C], "valid": valid[:, C:]}
