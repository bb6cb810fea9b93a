"""Write episodes into a flexwm LeRobot v3 dataset, packed as LeRobot packs them, crash-safely and resumably.

Episodes are packed many to a file (data parquet, mp4 and meta/episodes parquet), each file rolling over at a
size bound (`data_files_size_in_mb`, `video_files_size_in_mb`, LeRobot's defaults 100 and 500). A packed file
is never appended to in place: episodes wait in meta/staging until their file is full (or the writer closes),
then the file is written once, whole. Every file is written to a temp name and renamed into place, in this order:

    add(episode)    staging data parquet, staging mp4, tasks.parquet (only when the task is new), the staged
                    episode's metadata file (its commit), then info.json and stats.json
    finishing a     data/chunk-C/file-F.parquet (the staged tables, concatenated), videos/.../file-F.mp4 (the
    packed file     staged mp4s remuxed, not re-encoded), then meta/episodes/chunk-M/file-N.parquet with the new
                    rows appended (its commit), then the staged files are removed

So an episode exists from the moment its staged metadata file does, and moves into its packed file in one
rename. A `kill -9` at any point loses at most the episode in flight: a packed file without its meta/episodes
commit, staged files without metadata or staged copies of already-packed episodes are ignored by readers and
removed when the dataset is opened again for writing, which goes on from the staged episodes. Closing the writer
packs the staged episodes, so a closed dataset has no staging and is read by LeRobot as it is; a dataset opened
again starts a new file. Datasets written before packing (one episode per file) are appended to as they are.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flexwm.data.episode import Episode
from flexwm.data.layout import (
    find_orphans,
    find_packed_orphans,
    is_packed_flexwm,
    read_episode_rows,
    read_flexwm_packed_rows,
    task_list_of,
)
from flexwm.data.lerobot import (
    ACTION_KEY,
    DATA_SHA_COLUMN,
    ENV_STATE_KEY,
    EXTRA_COLUMN,
    INFO_PATH,
    LEGACY_ENV_STATE_KEY,
    OUTCOME_CODES,
    OUTCOME_KEY,
    QUANTILE_NAMES,
    STAT_NAMES,
    STATE_KEY,
    STATS_PATH,
    SUCCESS_KEY,
    TASKS_PATH,
    VIDEO_KEY,
    VIDEO_SHA_COLUMN,
    array_stats,
    chunk_file,
    data_path,
    data_schema,
    episode_meta_path,
    episodes_schema,
    image_stats,
    make_info,
    schema_mismatches,
    staged_paths,
    stats_json,
    tasks_table,
    video_path,
    with_totals,
)
from flexwm.data.plain import resolve_layout
from flexwm.data.reader import FlexDataset, read_info
from flexwm.data.video import concat_videos, encode_video
from flexwm.errors import DatasetError
from flexwm.io import atomic_write, atomic_write_json, sha256_file

MAX_STAGED = 1000  # episodes of one packed file at most (see DatasetWriter._file_full)


class RunningStats:
    """Dataset-wide stats of one feature from per-episode stats, O(1) per episode: exact min/max/mean/std, and
    quantiles as the count-weighted mean of the episodes' quantiles (LeRobot's `aggregate_feature_stats`)."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim)
        self.sumsq = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.qsum = {q: np.zeros(dim) for q in QUANTILE_NAMES}

    def add(self, st: dict[str, list]) -> None:
        n = int(st["count"][0])
        mean, std = np.asarray(st["mean"], float), np.asarray(st["std"], float)
        self.n += n
        self.sum += n * mean
        self.sumsq += n * (std**2 + mean**2)
        self.min = np.minimum(self.min, st["min"])
        self.max = np.maximum(self.max, st["max"])
        for q in QUANTILE_NAMES:
            self.qsum[q] += n * np.asarray(st[q], float)

    def to_json(self) -> dict[str, list]:
        mean = self.sum / max(self.n, 1)
        std = np.sqrt(np.maximum(self.sumsq / max(self.n, 1) - mean**2, 0.0))
        return {"min": self.min.tolist(), "max": self.max.tolist(), "mean": mean.tolist(), "std": std.tolist(),
                "count": [self.n], **{q: (v / max(self.n, 1)).tolist() for q, v in self.qsum.items()}}


def _only_leftovers(root: Path) -> bool:
    """True if every file under `root` is a temp file of an interrupted write (or there are none)."""
    return all(p.name.startswith(".") and p.name.endswith(".tmp") for p in root.rglob("*") if not p.is_dir())


def _vector_column(x: np.ndarray, dim: int) -> pa.Array:
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), dim)
    offsets = pa.array(np.arange(len(x) + 1, dtype=np.int32) * dim)
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), type=pa.float32()))


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


class DatasetWriter:
    """Appends episodes to the dataset at `root`, creating it or resuming it (the schema must match).

    Use as a context manager (closing packs the staged episodes); `add` returns the new episode's index. Only one
    writer may hold a dataset. data_files_size_in_mb / video_files_size_in_mb: the size at which a packed data /
    video file rolls over to the next (default: the dataset's own, else LeRobot's 100 / 500); recorded in info.json.
    """

    def __init__(self, root: str | Path, *, fps: int, image_size: int | tuple[int, int], action_dim: int,
                 proprio_dim: int, state_dim: int, embodiment: str, action_low: list[float] | None = None,
                 action_high: list[float] | None = None, data_files_size_in_mb: float | None = None,
                 video_files_size_in_mb: float | None = None):
        self.root = Path(root)
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.schema = dict(fps=int(fps), image_size=(int(h), int(w)), action_dim=int(action_dim),
                           proprio_dim=int(proprio_dim), state_dim=int(state_dim), embodiment=str(embodiment),
                           action_low=None if action_low is None else [float(v) for v in action_low],
                           action_high=None if action_high is None else [float(v) for v in action_high])
        if self.schema["action_dim"] < 1 or self.schema["proprio_dim"] < 0 or self.schema["state_dim"] < 0:
            raise DatasetError(f"invalid dataset schema {self.schema}: action_dim must be >= 1, other dims >= 0")
        self._lock_fd: int | None = None
        self._closed = False
        self._staged: list[dict[str, Any]] = []  # metadata rows of the episodes in meta/staging, in order
        self._staged_bytes = (0, 0)  # their data and video bytes
        self._next_file = 0  # the index of the next packed data/video file (chunk * chunks_size + file)
        self._meta_file = (0, 0)  # the meta/episodes file (chunk, file) packed rows are appended to
        self._env_key = ENV_STATE_KEY

        bounds = {"data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": video_files_size_in_mb}
        for k, v in bounds.items():
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise DatasetError(f"{k} must be a positive number of megabytes, got {v!r}")

        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root} is a file, not a directory; choose a new --out directory")
        if (self.root / INFO_PATH).is_file():
            self.info = read_info(self.root)
            fx = self.info.get("flexwm")
            if not isinstance(fx, dict) or (fx.get("episodes_per_file") != 1 and not is_packed_flexwm(self.info)):
                raise DatasetError(f"{self.root} was written by LeRobot (or rewritten by its tools): flexwm reads it "
                                   "but does not append to it; choose a new --out directory")
            bad = schema_mismatches(self.info, self.schema)
            if bad:
                raise DatasetError(f"dataset {self.root} has " + "; ".join(bad)
                                   + ". Use a new --out directory (datasets are never overwritten).")
        elif self.root.is_dir() and not _only_leftovers(self.root):
            raise DatasetError(f"{self.root} exists, is not empty and is not a flexwm dataset (no {INFO_PATH}); "
                               "choose a new --out directory")
        else:
            self.info = make_info(**self.schema)
        self.info.update({k: v for k, v in bounds.items() if v is not None})
        self._packed = is_packed_flexwm(self.info)  # False: the one-episode-per-file layout of older datasets
        if LEGACY_ENV_STATE_KEY in self.info["features"]:  # an older dataset keeps its column name
            self._env_key = LEGACY_ENV_STATE_KEY
        # ... and its columns: LeRobot reads every data file of a dataset with one schema
        self._outcome_column = OUTCOME_KEY in self.info["features"]
        self._check_writable()
        self._lock()
        try:
            self._resume()
        except BaseException:
            self._closed = True
            self._release()
            raise

    # ---- set-up --------------------------------------------------------------------------------------------
    def _resume(self) -> None:
        """Load counters, tasks and running stats from the episode metadata; remove orphans; refresh derived files."""
        if self._packed:
            rows = read_flexwm_packed_rows(self.root, self.info, resolve_layout(self.root, self.info), stats=True)
            if any(r.get("outcome") is None for r in rows):
                raise DatasetError(f"{self.root}'s episode metadata was rewritten without flexwm's labels (by "
                                   "LeRobot's tools): flexwm reads it but does not append to it; choose a new --out "
                                   "directory")
            self._staged = [r for r in rows if r.get("staged")]
            sizes = [0, 0]
            for r in self._staged:
                for k, f in enumerate(staged_paths(self.root, r["episode_index"])[:2]):
                    if not f.is_file():
                        raise DatasetError(f"{self.root}: staged episode {r['episode_index']}'s file {f} is missing; "
                                           f"run `flexwm data verify {self.root}`, then restore the file from a copy "
                                           "or write to a new --out directory")
                    sizes[k] += f.stat().st_size
            self._staged_bytes = (sizes[0], sizes[1])
            packed = [r for r in rows if not r.get("staged")]
            self._next_file = 1 + max((r["data/chunk_index"] * int(self.info["chunks_size"]) + r["data/file_index"]
                                       for r in packed), default=-1)
            last = max(packed, key=lambda r: (r["meta/episodes/chunk_index"], r["meta/episodes/file_index"]),
                       default=None)
            self._meta_file = (0, 0) if last is None else (last["meta/episodes/chunk_index"],
                                                           last["meta/episodes/file_index"])
            orphans = find_packed_orphans(self.root, rows)
        else:
            rows = read_episode_rows(self.root, self.info)
            orphans = find_orphans(self.root, len(rows), int(self.info["chunks_size"]))
        self._n = len(rows)
        self._frames = int(rows[-1]["dataset_to_index"]) if rows else 0
        self._tasks = {t: k for k, t in enumerate(task_list_of(rows))}
        s = self.schema
        dims = {ACTION_KEY: s["action_dim"], STATE_KEY: s["proprio_dim"], self._env_key: s["state_dim"], VIDEO_KEY: 3}
        self._stats = {key: RunningStats(dims[key]) for key in dims}
        old = None
        for i, r in enumerate(rows):
            names = STAT_NAMES + QUANTILE_NAMES
            if all(r.get(f"stats/{key}/{n}") is not None for key in dims for n in names):
                for key in dims:
                    self._stats[key].add({n: r[f"stats/{key}/{n}"] for n in names})
                continue
            # written before quantiles and image stats were: computed once from the episode itself
            old = old or FlexDataset(self.root)
            for key, st in self._episode_stats(old.load_episode(i)).items():
                self._stats[key].add(st)
        for f in orphans:
            f.unlink(missing_ok=True)
        self._write_meta(tasks_changed=True)

    def _check_writable(self) -> None:
        try:
            (self.root / "meta").mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=self.root / "meta")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise DatasetError(f"cannot write to dataset directory {self.root} ({e.strerror or e}); choose a "
                               "writable --out directory or fix its permissions") from e

    def _lock(self) -> None:
        fd = os.open(self.root / "meta", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DatasetError(f"another process is writing to {self.root}; wait for it to finish or write to a "
                               "new --out directory") from None
        self._lock_fd = fd

    # ---- writing -------------------------------------------------------------------------------------------
    def add(self, episode: Episode) -> int:
        """Store one complete episode; returns its episode_index."""
        if self._closed:
            raise DatasetError(f"the writer for {self.root} is closed")
        self._check_episode(episode)
        i, T, chunk_size = self._n, episode.length, int(self.info["chunks_size"])
        task = episode.meta.instruction
        task_index = self._tasks.get(task, len(self._tasks))
        start = self._frames
        s = self.schema

        table = pa.table({
            STATE_KEY: _vector_column(episode.proprio, s["proprio_dim"]),
            self._env_key: _vector_column(episode.state, s["state_dim"]),
            ACTION_KEY: _vector_column(episode.actions, s["action_dim"]),
            SUCCESS_KEY: pa.array(np.asarray(episode.success, dtype=bool)),
            **({OUTCOME_KEY: pa.array(np.full(T, OUTCOME_CODES[episode.meta.outcome], dtype=np.int64))}
               if self._outcome_column else {}),
            "timestamp": pa.array(np.arange(T, dtype=np.float32) / np.float32(s["fps"])),
            "frame_index": pa.array(np.arange(T, dtype=np.int64)),
            "episode_index": pa.array(np.full(T, i, dtype=np.int64)),
            "index": pa.array(np.arange(start, start + T, dtype=np.int64)),
            "task_index": pa.array(np.full(T, task_index, dtype=np.int64)),
        }, schema=data_schema(s["action_dim"], s["proprio_dim"], s["state_dim"], self._env_key,
                              self._outcome_column))
        if self._packed:  # staged until its packed file is written: no file location yet
            data_file, video_file, meta_file = staged_paths(self.root, i)
            chunk = file = meta_chunk = meta_file_index = None
        else:  # the older layout: the episode's own files are its final place
            chunk, file = chunk_file(i, chunk_size)
            meta_chunk, meta_file_index = chunk, file
            data_file, video_file = data_path(self.root, chunk, file), video_path(self.root, chunk, file)
            meta_file = episode_meta_path(self.root, chunk, file)
        atomic_write(data_file, lambda p: pq.write_table(table, p, compression="snappy", write_page_checksum=True))
        atomic_write(video_file, lambda p: encode_video(episode.frames, p, s["fps"]))
        sizes = (data_file.stat().st_size, video_file.stat().st_size)
        if self._packed and self._staged and self._file_full(sizes):
            self._pack_staged()  # this episode starts the next file
        if task not in self._tasks:
            atomic_write(self.root / TASKS_PATH, lambda p: pq.write_table(tasks_table([*self._tasks, task]), p))

        stats = self._episode_stats(episode)
        m = episode.meta
        row = {
            "episode_index": i, "tasks": [task], "length": T,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": start, "dataset_to_index": start + T,
            f"videos/{VIDEO_KEY}/chunk_index": chunk, f"videos/{VIDEO_KEY}/file_index": file,
            f"videos/{VIDEO_KEY}/from_timestamp": 0.0, f"videos/{VIDEO_KEY}/to_timestamp": T / s["fps"],
            "meta/episodes/chunk_index": meta_chunk, "meta/episodes/file_index": meta_file_index,
            **{f"stats/{key}/{name}": v for key, st in stats.items() for name, v in st.items()},
            "outcome": m.outcome, "source": m.source, "noise": float(m.noise), "embodiment": m.embodiment,
            "env_task": m.task, "instruction": m.instruction, "seed": int(m.seed),
            EXTRA_COLUMN: json.dumps(m.extra, sort_keys=True, default=_json_default),
            DATA_SHA_COLUMN: sha256_file(data_file),
            VIDEO_SHA_COLUMN: sha256_file(video_file),
        }
        meta_table = pa.Table.from_pylist([row], schema=episodes_schema(self._env_key))
        atomic_write(meta_file, lambda p: pq.write_table(meta_table, p))

        # the episode is now visible; bring the derived files up to date
        if self._packed:
            self._staged.append(row)
            self._staged_bytes = (self._staged_bytes[0] + sizes[0], self._staged_bytes[1] + sizes[1])
        new_task = task not in self._tasks
        self._tasks.setdefault(task, task_index)
        self._n += 1
        self._frames += T
        for key, st in stats.items():
            self._stats[key].add(st)
        self._write_meta(tasks_changed=new_task)
        return i

    # ---- packing -------------------------------------------------------------------------------------------
    def _bound(self, key: str) -> float:
        return float(self.info[key]) * 2**20

    def _file_full(self, sizes: tuple[int, int]) -> bool:
        """Whether the staged episodes fill their file, so that an episode of `sizes` (data, video bytes) starts
        the next one: LeRobot's rule (a file holds what fits under the bounds, at least one episode), plus at most
        MAX_STAGED episodes, which bounds what a reader of an unfinished dataset reads from meta/staging."""
        data, video = self._staged_bytes
        return (len(self._staged) >= MAX_STAGED or data + sizes[0] > self._bound("data_files_size_in_mb")
                or video + sizes[1] > self._bound("video_files_size_in_mb"))

    def _pack_staged(self) -> None:
        """Write the staged episodes as the next packed data and video file, commit them by renaming the
        meta/episodes file that lists them into place, then remove their staged files."""
        if not self._staged:
            return
        cs, fps = int(self.info["chunks_size"]), self.schema["fps"]
        chunk, file = chunk_file(self._next_file, cs)
        idx = [int(r["episode_index"]) for r in self._staged]
        staged = [staged_paths(self.root, i) for i in idx]
        dp, vp = data_path(self.root, chunk, file), video_path(self.root, chunk, file)
        data = pa.concat_tables([pq.read_table(d) for d, _, _ in staged])
        atomic_write(dp, lambda p: pq.write_table(data, p, compression="snappy", write_page_checksum=True))
        starts: list[float] = []
        atomic_write(vp, lambda p: starts.extend(concat_videos([v for _, v, _ in staged], p, fps)))
        data_sha, video_sha = sha256_file(dp), sha256_file(vp)

        schema = episodes_schema(self._env_key)
        mchunk, mfile = self._meta_file
        mpath = episode_meta_path(self.root, mchunk, mfile)
        old = pq.read_table(mpath) if mpath.is_file() else None
        grow = sum(m.stat().st_size for _, _, m in staged)
        if old is not None and (not old.schema.equals(schema, check_metadata=False)
                                or mpath.stat().st_size + grow > self._bound("data_files_size_in_mb")):
            self._meta_file = chunk_file(mchunk * cs + mfile + 1, cs)  # meta/episodes rolls over too
            mchunk, mfile = self._meta_file
            mpath, old = episode_meta_path(self.root, mchunk, mfile), None
        rows = []
        for r, start in zip(self._staged, starts):
            rows.append({**{k: v for k, v in r.items() if k != "staged"},
                         "data/chunk_index": chunk, "data/file_index": file,
                         f"videos/{VIDEO_KEY}/chunk_index": chunk, f"videos/{VIDEO_KEY}/file_index": file,
                         f"videos/{VIDEO_KEY}/from_timestamp": start,
                         f"videos/{VIDEO_KEY}/to_timestamp": start + int(r["length"]) / fps,
                         "meta/episodes/chunk_index": mchunk, "meta/episodes/file_index": mfile,
                         DATA_SHA_COLUMN: data_sha, VIDEO_SHA_COLUMN: video_sha})
        new = pa.Table.from_pylist(rows, schema=schema)
        meta = new if old is None else pa.concat_tables([old.cast(schema), new])
        atomic_write(mpath, lambda p: pq.write_table(meta, p))  # the commit: the episodes are now packed
        for paths in staged:
            for f in paths:
                f.unlink(missing_ok=True)
        self._staged, self._staged_bytes = [], (0, 0)
        self._next_file += 1

    def _episode_stats(self, episode: Episode) -> dict[str, dict[str, list]]:
        return {ACTION_KEY: array_stats(episode.actions), STATE_KEY: array_stats(episode.proprio),
                self._env_key: array_stats(episode.state), VIDEO_KEY: image_stats(episode.frames)}

    def _check_episode(self, ep: Episode) -> None:
        s = self.schema
        if not isinstance(ep, Episode):
            raise DatasetError(f"DatasetWriter.add expects an Episode, got {type(ep).__name__}")
        T = ep.length
        want = {"frames": (T, *s["image_size"], 3), "actions": (T, s["action_dim"]),
                "proprio": (T, s["proprio_dim"]), "state": (T, s["state_dim"]), "success": (T,)}
        bad = [f"{k} has shape {tuple(np.shape(getattr(ep, k)))}, expected {v}" for k, v in want.items()
               if tuple(np.shape(getattr(ep, k))) != v]
        if ep.fps != s["fps"]:
            bad.append(f"fps is {ep.fps}, expected {s['fps']}")
        if ep.meta.embodiment != s["embodiment"]:
            bad.append(f"embodiment is {ep.meta.embodiment!r}, expected {s['embodiment']!r}")
        for k in ("actions", "proprio", "state"):
            arr = np.asarray(getattr(ep, k), dtype=np.float64)
            if not bad and not np.all(np.isfinite(arr)):
                step = int(np.argwhere(~np.isfinite(arr.reshape(T, -1)))[0][0])
                bad.append(f"{k} has NaN/inf values (first at step {step})")
        if bad:
            raise DatasetError(f"episode ({ep.meta.embodiment}/{ep.meta.task}, seed {ep.meta.seed}) does not fit "
                               f"dataset {self.root}: " + "; ".join(bad))

    def _write_meta(self, tasks_changed: bool) -> None:
        if tasks_changed and self._tasks:
            atomic_write(self.root / TASKS_PATH, lambda p: pq.write_table(tasks_table(list(self._tasks)), p))
        atomic_write_json(self.root / INFO_PATH, with_totals(self.info, self._n, self._frames, len(self._tasks)))
        atomic_write_json(self.root / STATS_PATH, {k: stats_json(st.to_json(), image=k == VIDEO_KEY)
                                                   for k, st in self._stats.items() if st.n})

    # ---- lifetime ------------------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return self._n

    def close(self) -> None:
        """Pack the staged episodes (LeRobot then reads the whole dataset) and release the dataset."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._packed:
                self._pack_staged()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # already failing: pack if possible, else the staged episodes wait for the next writer
            self.close()
        except Exception:
            self._release()

    def __del__(self) -> None:  # never writes: an abandoned writer leaves its episodes staged
        if getattr(self, "_lock_fd", None) is not None:
            self._release()
