"""Read a flexwm LeRobot v3 dataset: episode metadata, whole episodes, and a full integrity check.

meta/episodes is the source of truth: an episode exists once its metadata file does (the writer renames it
into place last). Totals and the task list are recomputed from it, so a stale info.json or tasks.parquet left
by a kill between files is harmless, and data/video files without metadata (orphans) are ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flexwm.data.episode import Episode, EpisodeMeta
from flexwm.data.lerobot import (
    ACTION_KEY,
    CODEBASE_VERSION,
    DATA_SHA_COLUMN,
    ENV_STATE_KEY,
    EPISODES_DIR,
    EXTRA_COLUMN,
    INFO_PATH,
    STATE_KEY,
    SUCCESS_KEY,
    TASKS_PATH,
    VIDEO_KEY,
    VIDEO_SHA_COLUMN,
    chunk_file,
    data_path,
    episode_meta_path,
    episodes_schema,
    video_path,
    with_totals,
)
from flexwm.data.video import decode_video
from flexwm.errors import DatasetError
from flexwm.io import sha256_bytes, sha256_file

_FILE_RE = re.compile(r"file-(\d+)\.parquet")
_CHUNK_RE = re.compile(r"chunk-(\d+)")


def _fix_hint(root: Path) -> str:
    return (f"run `flexwm data verify {root}` to list every damaged episode, then re-collect into a new --out "
            "directory (or restore the file from a copy)")


def read_info(root: Path) -> dict:
    """meta/info.json of a flexwm dataset; DatasetError if `root` is not one."""
    root = Path(root)
    path = root / INFO_PATH
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist; collect one with `flexwm collect --out {root}`")
    if not path.is_file():
        raise DatasetError(f"{root} is not a flexwm dataset (no {INFO_PATH}); pass the directory given to "
                           "`flexwm collect --out`")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path} is unreadable ({e}); restore it or re-collect the dataset") from e
    if not isinstance(info, dict) or info.get("codebase_version") != CODEBASE_VERSION or "flexwm" not in info:
        version = info.get("codebase_version") if isinstance(info, dict) else None
        raise DatasetError(f"{root} is not a flexwm LeRobot {CODEBASE_VERSION} dataset (codebase_version "
                           f"{version!r}, flexwm block "
                           f"{'present' if isinstance(info, dict) and 'flexwm' in info else 'missing'})")
    problem = _info_problem(info)
    if problem:
        raise DatasetError(f"{path} {problem}; restore it from a copy or re-collect the dataset")
    return info


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _info_problem(info: dict) -> str | None:
    """What is wrong with the fields of info.json the reader relies on (None if nothing)."""
    fx = info.get("flexwm")
    if not isinstance(fx, dict):
        return "has a 'flexwm' entry that is not an object"
    for key, low in (("fps", 1), ("chunks_size", 1)):
        if not _is_int(info.get(key), low):
            return f"has {key} = {info.get(key)!r}; it must be an integer >= {low}"
    for key, low in (("action_dim", 1), ("proprio_dim", 0), ("state_dim", 0)):
        if not _is_int(fx.get(key), low):
            return f"has flexwm.{key} = {fx.get(key)!r}; it must be an integer >= {low}"
    size = fx.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v, 1) for v in size)):
        return f"has flexwm.image_size = {size!r}; it must be [height, width]"
    if not isinstance(info.get("robot_type"), str) or not info["robot_type"]:
        return f"has robot_type = {info.get('robot_type')!r}; it must name the embodiment"
    return None


def list_episode_files(root: Path, chunks_size: int) -> dict[int, Path]:
    """{episode_index: metadata file} from the names under meta/episodes (temp files are skipped)."""
    out: dict[int, Path] = {}
    base = Path(root) / EPISODES_DIR
    if not base.is_dir():
        return out
    for chunk_dir in base.iterdir():
        m = _CHUNK_RE.fullmatch(chunk_dir.name)
        if not (m and chunk_dir.is_dir()):
            continue
        for f in chunk_dir.iterdir():
            fm = _FILE_RE.fullmatch(f.name)
            if fm:
                out[int(m.group(1)) * chunks_size + int(fm.group(1))] = f
    return out


def read_episode_rows(root: Path, info: dict) -> list[dict[str, Any]]:
    """All episode metadata rows (stats columns included), checked to be contiguous and consistent."""
    root = Path(root)
    chunks_size = int(info["chunks_size"])
    files = list_episode_files(root, chunks_size)
    rows: list[dict[str, Any]] = []
    for i in range(len(files)):
        if i not in files:
            last = max(files)
            raise DatasetError(f"{root}: the metadata of episode {i} is missing but episode {last} exists "
                               f"(expected {episode_meta_path(root, *chunk_file(i, chunks_size))}); "
                               f"{_fix_hint(root)}")
        path = files[i]
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{root}: episode {i}'s metadata file {path} is damaged ({e}); {_fix_hint(root)}") from e
        if table.num_rows != 1 or "episode_index" not in table.column_names:
            raise DatasetError(f"{root}: {path} should hold one episode row, found {table.num_rows}; {_fix_hint(root)}")
        missing = [c for c in _REQUIRED_META if c not in table.column_names]
        if missing:
            raise DatasetError(f"{root}: episode {i}'s metadata file {path} lacks columns {missing}; {_fix_hint(root)}")
        row = table.to_pylist()[0]
        problem = _row_problem(row, i, rows[-1] if rows else None)
        if problem:
            raise DatasetError(f"{root}: episode {i}'s metadata ({path}) {problem}; {_fix_hint(root)}")
        rows.append(row)
    return rows


_REQUIRED_META = [n for n in episodes_schema().names if n not in (DATA_SHA_COLUMN, VIDEO_SHA_COLUMN)]


def _row_problem(row: dict, i: int, prev: dict | None) -> str | None:
    if row.get("episode_index") != i:
        return f"says episode_index {row.get('episode_index')}"
    start = prev["dataset_to_index"] if prev else 0
    if row.get("dataset_from_index") != start:
        return f"has dataset_from_index {row.get('dataset_from_index')} but the previous episode ends at {start}"
    if row.get("length", 0) < 1 or row.get("dataset_to_index") != start + row["length"]:
        return f"has dataset_to_index {row.get('dataset_to_index')} != from {start} + length {row.get('length')}"
    return None


def task_list_of(rows: list[dict]) -> list[str]:
    """Tasks (LeRobot task strings = instructions) in task_index order: order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        for t in r["tasks"]:
            seen.setdefault(t, None)
    return list(seen)


class FlexDataset:
    """A flexwm dataset on disk. `episodes[i]` is episode i's metadata; `load_episode(i)` decodes it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info = read_info(self.root)
        self._info = info
        rows = read_episode_rows(self.root, info)
        self.episodes: list[dict[str, Any]] = []
        for r in rows:
            ep = {k: v for k, v in r.items() if not k.startswith("stats/")}
            try:
                ep["extra"] = json.loads(r.get(EXTRA_COLUMN) or "{}")
            except ValueError:
                ep["extra"] = {}
            self.episodes.append(ep)
        self._tasks = task_list_of(rows)
        self.num_frames = int(rows[-1]["dataset_to_index"]) if rows else 0
        self.meta = with_totals(info, len(rows), self.num_frames, len(self._tasks))
        self._one_per_file = info["flexwm"].get("episodes_per_file") == 1

    # schema -------------------------------------------------------------------------------------------------
    @property
    def fps(self) -> int:
        return int(self._info["fps"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self._info["flexwm"]["image_size"]
        return int(h), int(w)

    @property
    def action_dim(self) -> int:
        return int(self._info["flexwm"]["action_dim"])

    @property
    def proprio_dim(self) -> int:
        return int(self._info["flexwm"]["proprio_dim"])

    @property
    def state_dim(self) -> int:
        return int(self._info["flexwm"]["state_dim"])

    @property
    def embodiment(self) -> str:
        return str(self._info["robot_type"])

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return f"FlexDataset({str(self.root)!r}, episodes={len(self)}, frames={self.num_frames})"

    def task_list(self) -> list[str]:
        return list(self._tasks)

    # episodes -----------------------------------------------------------------------------------------------
    def load_episode(self, i: int) -> Episode:
        """Episode i with its frames decoded; DatasetError naming the file if anything is missing or damaged."""
        cols, frames = self._read(i)
        ep = self.episodes[i]
        try:
            meta = EpisodeMeta(embodiment=ep["embodiment"], task=ep["env_task"], instruction=ep["instruction"],
                               outcome=ep["outcome"], source=ep["source"], noise=float(ep["noise"]),
                               seed=int(ep["seed"]), extra=dict(ep["extra"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{self.root}: episode {i}'s metadata is invalid ({e}); {_fix_hint(self.root)}") from e
        return Episode(frames=frames, proprio=cols[STATE_KEY], actions=cols[ACTION_KEY], success=cols[SUCCESS_KEY],
                       state=cols[ENV_STATE_KEY], meta=meta, fps=self.fps)

    def load_columns(self, i: int) -> dict[str, np.ndarray]:
        """Episode i's non-video columns (action, observation.state, observation.env_state, next.success, ...),
        checked like `load_episode` but without decoding the video: cheap enough to hold for a whole dataset."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range: {self.root} has {len(self)} episodes")
        return self._load_rows(i, self.episodes[i])

    def _read(self, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Episode i's data columns and decoded frames, checked against each other and the metadata."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range: {self.root} has {len(self)} episodes")
        ep = self.episodes[i]
        T = int(ep["length"])
        cols = self._load_rows(i, ep)
        frames = self._load_frames(i, ep)
        if frames.shape != (T, *self.image_size, 3):
            raise DatasetError(
                f"{self.root}: episode {i}'s video {self._video_file(i)} decodes to {frames.shape[0]} frames of "
                f"{frames.shape[1:3]} but the episode has {T} steps of {self.image_size}; {_fix_hint(self.root)}")
        return cols, frames

    def _data_file(self, i: int) -> Path:
        ep = self.episodes[i]
        return self._path(i, data_path, ep["data/chunk_index"], ep["data/file_index"])

    def _video_file(self, i: int) -> Path:
        ep = self.episodes[i]
        return self._path(i, video_path, ep[f"videos/{VIDEO_KEY}/chunk_index"], ep[f"videos/{VIDEO_KEY}/file_index"])

    def _path(self, i: int, make, chunk: Any, file: Any) -> Path:
        try:
            return make(self.root, chunk, file)  # integer indices only: metadata cannot name other paths
        except ValueError as e:
            raise DatasetError(f"{self.root}: episode {i}'s metadata has an invalid file index ({e}); "
                               f"{_fix_hint(self.root)}") from e

    def _load_rows(self, i: int, ep: dict) -> dict[str, np.ndarray]:
        path = self._data_file(i)
        T, start = int(ep["length"]), int(ep["dataset_from_index"])
        try:
            raw = path.read_bytes()
            want = ep.get(DATA_SHA_COLUMN)
            if want and sha256_bytes(raw) != want:
                raise DatasetError(f"{self.root}: episode {i}'s data file {path} is damaged: its sha256 differs from "
                                   f"the one written with it; {_fix_hint(self.root)}")
            table = pq.read_table(pa.BufferReader(raw), page_checksum_verification=True)  # CRC per data page
            rows_in_file = table.num_rows
            table = table.filter(pc.equal(table["episode_index"], i))
            frame_index = table["frame_index"].to_numpy()
            order = np.argsort(frame_index, kind="stable")
            cols = {
                ACTION_KEY: _vectors(table, ACTION_KEY, self.action_dim)[order],
                STATE_KEY: _vectors(table, STATE_KEY, self.proprio_dim)[order],
                ENV_STATE_KEY: _vectors(table, ENV_STATE_KEY, self.state_dim)[order],
                SUCCESS_KEY: table[SUCCESS_KEY].to_numpy(zero_copy_only=False).astype(bool)[order],
                "frame_index": frame_index[order],
                "timestamp": table["timestamp"].to_numpy()[order],
                "index": table["index"].to_numpy()[order],
                "task_index": table["task_index"].to_numpy()[order],
            }
        except FileNotFoundError as e:
            raise DatasetError(f"{self.root}: episode {i}'s data file {path} is missing; {_fix_hint(self.root)}") from e
        except (pa.ArrowException, OSError, KeyError, ValueError) as e:
            raise DatasetError(f"{self.root}: episode {i}'s data file {path} is damaged ({e}); "
                               f"{_fix_hint(self.root)}") from e
        problem = None
        if self._one_per_file and rows_in_file != T:
            problem = f"has {rows_in_file} rows but the episode's metadata says length {T}"
        elif len(cols["frame_index"]) != T:
            problem = f"has {len(cols['frame_index'])} rows for the episode but its metadata says length {T}"
        elif not np.array_equal(cols["frame_index"], np.arange(T)):
            problem = "has frame_index values that are not 0..length-1"
        elif not np.array_equal(cols["index"], np.arange(start, start + T)):
            problem = f"has index values that are not dataset_from_index..dataset_to_index-1 ({start}..{start + T - 1})"
        elif not np.allclose(cols["timestamp"], np.arange(T) / self.fps, atol=1e-3):
            problem = f"has timestamps that do not match the dataset's fps {self.fps} (meta/info.json)"
        elif not np.all(np.isfinite(cols[ACTION_KEY])) or not np.all(np.isfinite(cols[STATE_KEY])):
            problem = "has non-finite actions or proprio"
        if problem:
            raise DatasetError(f"{self.root}: episode {i}'s data file {path} {problem}; {_fix_hint(self.root)}")
        return cols

    def _load_frames(self, i: int, ep: dict) -> np.ndarray:
        path = self._video_file(i)
        if not path.is_file():
            raise DatasetError(f"{self.root}: episode {i}'s video {path} is missing; {_fix_hint(self.root)}")
        want = ep.get(VIDEO_SHA_COLUMN)
        if want and sha256_file(path) != want:
            raise DatasetError(f"{self.root}: episode {i}'s video {path} is damaged: its sha256 differs from the one "
                               f"written with it; {_fix_hint(self.root)}")
        try:
            if self._one_per_file:  # the whole file is the episode: extra frames are damage, not a neighbour
                return decode_video(path, size=self.image_size)
            return decode_video(path, size=self.image_size,
                                from_timestamp=float(ep[f"videos/{VIDEO_KEY}/from_timestamp"]),
                                to_timestamp=float(ep[f"videos/{VIDEO_KEY}/to_timestamp"]))
        except Exception as e:  # av raises many error types (InvalidDataError, EOFError, ValueError, ...)
            raise DatasetError(f"{self.root}: episode {i}'s video {path} cannot be decoded ({type(e).__name__}: "
                               f"{e}); {_fix_hint(self.root)}") from e


def _vectors(table: pa.Table, key: str, dim: int) -> np.ndarray:
    """A list<float32> column as float32 (T, dim); ValueError if any row does not have `dim` values."""
    arr = table[key].combine_chunks()
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False) if len(arr) else np.zeros(0)
    if np.any(lengths != dim):
        raise ValueError(f"column {key} has rows of length {sorted(set(lengths.tolist()))}, expected {dim}")
    values = arr.flatten().to_numpy(zero_copy_only=False) if len(arr) else np.zeros(0)
    return np.asarray(values, dtype=np.float32).reshape(len(arr), dim)


def find_orphans(root: Path, n_episodes: int, chunks_size: int) -> list[Path]:
    """Files an interrupted write left behind: temp files, and data/video/metadata files of episodes >= n."""
    root = Path(root)
    out = []
    for base in (root / "meta", root / "data", root / "videos"):
        if not base.is_dir():
            continue
        for f in base.rglob("*"):
            if not f.is_file():
                continue
            if f.name.startswith(".") and f.name.endswith(".tmp"):
                out.append(f)
                continue
            fm = re.fullmatch(r"file-(\d+)\.(parquet|mp4)", f.name)
            cm = _CHUNK_RE.fullmatch(f.parent.name)
            if fm and cm and int(cm.group(1)) * chunks_size + int(fm.group(1)) >= n_episodes:
                out.append(f)
    return sorted(out)


def verify(root: str | Path) -> dict:
    """Decode and check every episode.

    Returns {"root", "episodes", "frames", "ok", "damaged", "notes"}: `damaged` lists
    {"episode_index", "error"} for every episode that cannot be read back intact; `notes` lists harmless
    leftovers of an interrupted write (stale info.json/tasks.parquet, orphaned files), fixed by the next write.
    Raises DatasetError if the dataset cannot be opened at all.
    """
    ds = FlexDataset(root)
    damaged, notes = [], []
    tasks = ds.task_list()
    for i in range(len(ds)):
        try:
            cols, _ = ds._read(i)
            task = ds.episodes[i]["tasks"][0]
            if set(cols["task_index"].tolist()) != {tasks.index(task)}:
                raise DatasetError(f"{ds.root}: episode {i}'s data file {ds._data_file(i)} has "
                                   f"task_index {sorted(set(cols['task_index'].tolist()))} but its task {task!r} "
                                   f"has index {tasks.index(task)}; {_fix_hint(ds.root)}")
        except DatasetError as e:
            damaged.append({"episode_index": i, "error": str(e)})
    on_disk = ds._info
    if (on_disk.get("total_episodes"), on_disk.get("total_frames")) != (len(ds), ds.num_frames):
        notes.append(f"info.json totals ({on_disk.get('total_episodes')} episodes, {on_disk.get('total_frames')} "
                     f"frames) are stale; meta/episodes (the source of truth) says {len(ds)} / {ds.num_frames}")
    try:
        stored = pq.read_table(ds.root / TASKS_PATH)["task"].to_pylist()
    except (OSError, pa.ArrowException, KeyError):
        stored = None
    if tasks and stored != tasks:
        notes.append("meta/tasks.parquet differs from the tasks in meta/episodes (the source of truth)")
    orphans = find_orphans(ds.root, len(ds), int(on_disk["chunks_size"]))
    if orphans:
        notes.append(f"{len(orphans)} orphaned file(s) from an interrupted write are ignored, e.g. "
                     f"{orphans[0].relative_to(ds.root)}; a resumed write removes them")
    return {"root": str(ds.root), "episodes": len(ds), "frames": ds.num_frames, "ok": len(ds) - len(damaged),
            "damaged": damaged, "notes": notes}
