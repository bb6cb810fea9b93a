"""Read a LeRobot v3 dataset: episode metadata, whole episodes, and a full integrity check.

Three kinds of dataset come through the same interface: flexwm's packed datasets (many episodes per file, as
LeRobot lays them out, with flexwm's labels and per-file checksums, plus the episodes still waiting in
meta/staging for their packed file), flexwm's older datasets (one episode per file), and datasets LeRobot wrote
(any cameras, no labels: see flexwm/data/plain.py).

Opening a packed dataset reads meta/ only (info.json, tasks.parquet, the few meta/episodes files and the staged
episodes' metadata): no data or video file is opened or listed, so it costs the same for 10 files or 10,000.
For flexwm's datasets the episode metadata is the source of truth: an episode exists once its metadata is
committed (a staged episode's metadata file, or the packed meta/episodes file, renamed into place last). Totals
and the task list are recomputed from it, so a stale info.json or tasks.parquet left by a kill between files is
harmless, and data/video files no metadata points at (orphans) are ignored.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flexwm.data import plain
from flexwm.data.episode import Episode, EpisodeMeta
from flexwm.data.layout import (  # noqa: F401  (re-exported: flexwm's readers of the layout import them from here)
    all_episode_files,
    env_state_key_of,
    find_orphans,
    find_packed_orphans,
    is_flexwm_layout,
    is_int,
    is_packed_flexwm,
    list_episode_files,
    read_episode_rows,
    read_flexwm_packed_rows,
    read_staged_rows,
    required_meta,
    task_list_of,
)
from flexwm.data.layout import (
    fix_hint as _fix_hint,
)
from flexwm.data.lerobot import (
    ACTION_KEY,
    CODEBASE_VERSION,
    DATA_SHA_COLUMN,
    ENV_STATE_KEY,
    INFO_PATH,
    OUTCOME_KEY,
    STATE_KEY,
    SUCCESS_KEY,
    VIDEO_SHA_COLUMN,
    data_path,
    staged_paths,
    video_path,
    with_totals,
)
from flexwm.data.video import decode_video
from flexwm.errors import ConfigError, DatasetError
from flexwm.io import sha256_bytes, sha256_file


def read_info(root: Path) -> dict:
    """meta/info.json of a LeRobot v3.0 dataset (flexwm's or LeRobot's); DatasetError if `root` is not one."""
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
    version = info.get("codebase_version") if isinstance(info, dict) else None
    if version != CODEBASE_VERSION:
        raise DatasetError(f"{root} is not a LeRobot {CODEBASE_VERSION} dataset (codebase_version {version!r}); "
                           "convert an older LeRobot dataset with LeRobot's "
                           "`python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`")
    problem = _info_problem(info)
    if problem:
        raise DatasetError(f"{path} {problem}; restore it from a copy or re-collect the dataset")
    return info


def _info_problem(info: dict) -> str | None:
    """What is wrong with the fields of info.json the reader relies on (None if nothing)."""
    for key, low in (("fps", 1), ("chunks_size", 1)):
        if not is_int(info.get(key), low):
            return f"has {key} = {info.get(key)!r}; it must be an integer >= {low}"
    if not isinstance(info.get("features"), dict):
        return "has no 'features' object"
    if "flexwm" not in info:
        return None  # a dataset LeRobot wrote: its features are checked when the camera is chosen
    fx = info.get("flexwm")
    if not isinstance(fx, dict):
        return "has a 'flexwm' entry that is not an object"
    for key, low in (("action_dim", 1), ("proprio_dim", 0), ("state_dim", 0)):
        if not is_int(fx.get(key), low):
            return f"has flexwm.{key} = {fx.get(key)!r}; it must be an integer >= {low}"
    size = fx.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(is_int(v, 1) for v in size)):
        return f"has flexwm.image_size = {size!r}; it must be [height, width]"
    if not isinstance(info.get("robot_type"), str) or not info["robot_type"]:
        return f"has robot_type = {info.get('robot_type')!r}; it must name the embodiment"
    return None


class FlexDataset:
    """A dataset on disk. `episodes[i]` is episode i's metadata; `load_episode(i)` decodes it.

    camera: the video feature to read (needed when a dataset has several); action_key/state_key: the action and
    proprio features of a dataset flexwm did not write (default `action`, `observation.state`; any other name
    for a dataset flexwm wrote is a ConfigError); outcome: how episodes without flexwm
    labels are labelled (flexwm.data.plain.OUTCOME_RULES); embodiment: the name given to a dataset's robot
    (default: info.json's robot_type); image_size: frames are scaled to this size (H, W) or square side when
    decoded (datasets from the hub are often 480x640; flexwm's presets train at 64x64).
    """

    def __init__(self, root: str | Path, *, camera: str | None = None, outcome: str | None = None,
                 embodiment: str | None = None, image_size: int | tuple[int, int] | None = None,
                 action_key: str | None = None, state_key: str | None = None):
        self.root = Path(root)
        info = read_info(self.root)
        self._info = info
        self.outcome_rule = plain.check_outcome_rule(outcome)
        self.layout = plain.resolve_layout(self.root, info, camera, embodiment, action_key=action_key,
                                           state_key=state_key)
        self.stored_image_size = self.layout.image_size
        self._resize = plain.check_image_size(image_size, self.stored_image_size)
        if self._resize is not None:
            self.layout = dataclasses.replace(self.layout, image_size=self._resize)
        self.flexwm_layout = is_flexwm_layout(self.root, info)  # the older one-episode-per-file layout
        self.packed_by_flexwm = not self.flexwm_layout and is_packed_flexwm(info)
        if self.flexwm_layout:
            rows = read_episode_rows(self.root, info)
            tasks = task_list_of(rows)
        elif self.packed_by_flexwm:
            rows = read_flexwm_packed_rows(self.root, info, self.layout)
            tasks = task_list_of(rows)
        else:
            rows = plain.read_packed_rows(self.root, all_episode_files(self.root), self.layout, _fix_hint(self.root),
                                          info.get("total_episodes"), int(info["fps"]))
            stored = plain.read_tasks(self.root)
            if stored is not None:
                plain.check_episode_tasks(self.root, rows, stored, _fix_hint(self.root))
            tasks = stored or task_list_of(rows)
        if self.outcome_rule == "success-column" and self.layout.success_key is None:
            raise ConfigError(f"outcome rule 'success-column' needs a {SUCCESS_KEY} feature, but {self.root} has "
                              f"only {sorted(info['features'])}; declare 'last-frame' or 'success' instead")
        hint = _fix_hint(self.root)
        any_success = ([True in v for v in plain.episode_values(self.root, rows, SUCCESS_KEY, hint)]
                       if self.outcome_rule == "success-column" else [None] * len(rows))
        kept = [None] * len(rows)  # labels LeRobot's tools kept in the data when they dropped flexwm's metadata
        if not self.flexwm_layout and OUTCOME_KEY in info["features"] and rows and rows[0].get("outcome") is None:
            kept = [plain.stored_outcome(v) for v in plain.episode_values(self.root, rows, OUTCOME_KEY, hint)]
        self.episodes: list[dict[str, Any]] = [plain.label_episode(r, self.outcome_rule, self.layout, s, o)
                                               for r, s, o in zip(rows, any_success, kept)]
        if self._resize is not None:
            for ep in self.episodes:
                ep["image_size"] = list(self._resize)  # part of the episode's identity for caches
        self._tasks = tasks
        self.num_frames = int(sum(int(r["length"]) for r in rows))
        self.meta = with_totals(info, len(rows), self.num_frames, len(self._tasks))
        # per-file sha256: in every dataset flexwm wrote; a dataset LeRobot rewrote has files its checksums no
        # longer describe (LeRobot's tools drop them with the flexwm block)
        self._checksums = self.flexwm_layout or self.packed_by_flexwm
        self._checked: set[Path] = set()  # packed files whose checksum was verified (many episodes share one)
        self._table: tuple[Path, pa.Table] | None = None  # the last packed data file read (episodes come in order)
        # every feature but the videos is a column of the data files (LeRobot and flexwm write them all there)
        self._data_features = [k for k, f in info["features"].items() if not isinstance(f, dict)
                               or f.get("dtype") != "video"]

    # schema -------------------------------------------------------------------------------------------------
    @property
    def fps(self) -> int:
        return int(self._info["fps"])

    @property
    def image_size(self) -> tuple[int, int]:
        return self.layout.image_size

    @property
    def action_dim(self) -> int:
        return self.layout.action_dim

    @property
    def proprio_dim(self) -> int:
        return self.layout.proprio_dim

    @property
    def state_dim(self) -> int:
        return self.layout.state_dim

    @property
    def embodiment(self) -> str:
        return self.layout.embodiment

    @property
    def camera(self) -> str:
        return self.layout.camera

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
        """Episode i's non-video columns under flexwm's names (action, observation.state, flexwm.env_state,
        next.success, frame_index, timestamp, index, task_index), checked like `load_episode` but without
        decoding the video: cheap enough to hold for a whole dataset. Absent features are zeros (env state (T, 0));
        next.success follows the dataset's outcome rule."""
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

    def _whole_file(self, ep: dict) -> bool:
        """True when the episode's data and video files hold it alone (older layout, or staged)."""
        return self.flexwm_layout or bool(ep.get("staged"))

    def _data_file(self, i: int) -> Path:
        ep = self.episodes[i]
        if ep.get("staged"):
            return staged_paths(self.root, i)[0]
        return self._path(i, data_path, ep["data/chunk_index"], ep["data/file_index"])

    def _video_file(self, i: int) -> Path:
        ep, cam = self.episodes[i], self.layout.camera
        if ep.get("staged"):
            return staged_paths(self.root, i)[1]
        try:
            return video_path(self.root, ep[f"videos/{cam}/chunk_index"], ep[f"videos/{cam}/file_index"], cam)
        except ValueError as e:
            raise DatasetError(f"{self.root}: episode {i}'s metadata has an invalid file index ({e}); "
                               f"{_fix_hint(self.root)}") from e

    def _path(self, i: int, make, chunk: Any, file: Any) -> Path:
        try:
            return make(self.root, chunk, file)  # integer indices only: metadata cannot name other paths
        except ValueError as e:
            raise DatasetError(f"{self.root}: episode {i}'s metadata has an invalid file index ({e}); "
                               f"{_fix_hint(self.root)}") from e

    def _data_table(self, i: int, path: Path, ep: dict) -> pa.Table:
        """The whole data file holding episode i (sha256-checked when written by flexwm; the last packed file
        read is kept, so reading a packed dataset's episodes in order reads each file once)."""
        if self._table is not None and self._table[0] == path:
            return self._table[1]
        raw = path.read_bytes()
        want = ep.get(DATA_SHA_COLUMN) if self._checksums else None
        if want and sha256_bytes(raw) != want:
            raise DatasetError(f"{self.root}: episode {i}'s data file {path} is damaged: its sha256 differs from "
                               f"the one written with it; {_fix_hint(self.root)}")
        table = pq.read_table(pa.BufferReader(raw), page_checksum_verification=True)  # CRC per data page
        if not self._whole_file(ep):
            self._table = (path, table)
        return table

    def _load_rows(self, i: int, ep: dict) -> dict[str, np.ndarray]:
        path = self._data_file(i)
        T, start = int(ep["length"]), int(ep["dataset_from_index"])
        L = self.layout
        try:
            table = self._data_table(i, path, ep)
            missing = [k for k in self._data_features if k not in table.column_names]
            if missing:  # e.g. a renamed feature: reading on would silently drop or zero it
                raise ValueError(f"it has no column for the features {missing} that meta/info.json declares (its "
                                 f"columns: {table.column_names})")
            rows_in_file = table.num_rows
            table = table.filter(pc.equal(table["episode_index"], i))
            frame_index = table["frame_index"].to_numpy()
            order = np.argsort(frame_index, kind="stable")
            n = len(frame_index)
            stored = (table[L.success_key].to_numpy(zero_copy_only=False).astype(bool)[order]
                      if L.success_key and L.success_key in table.column_names else None)
            cols = {
                ACTION_KEY: _vectors(table, L.action_key, self.action_dim)[order],
                STATE_KEY: (_vectors(table, L.state_key, self.proprio_dim)[order] if L.state_key
                            else np.zeros((n, self.proprio_dim), np.float32)),
                ENV_STATE_KEY: (_vectors(table, L.env_state_key, self.state_dim)[order] if L.env_state_key
                                else np.zeros((n, 0), np.float32)),
                SUCCESS_KEY: (stored if self.outcome_rule == "labels" and stored is not None else
                              plain.declared_success(self.outcome_rule, stored, n) if n else np.zeros(0, bool)),
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
        if self._whole_file(ep) and rows_in_file != T:
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
        want = ep.get(VIDEO_SHA_COLUMN) if self._checksums and path not in self._checked else None
        if want and sha256_file(path) != want:
            raise DatasetError(f"{self.root}: episode {i}'s video {path} is damaged: its sha256 differs from the one "
                               f"written with it; {_fix_hint(self.root)}")
        if want and not self._whole_file(ep):
            self._checked.add(path)
        try:
            if self._whole_file(ep):  # the whole file is the episode: extra frames are damage, not a neighbour
                return decode_video(path, size=self.stored_image_size, resize=self._resize)
            cam = self.layout.camera
            start = float(ep[f"videos/{cam}/from_timestamp"])
            end = float(ep[f"videos/{cam}/to_timestamp"])
            return decode_video(path, size=self.stored_image_size, from_timestamp=start,
                                to_timestamp=end + 0.5 / self.fps, max_frames=int(ep["length"]), resize=self._resize)
        except Exception as e:  # av raises many error types (InvalidDataError, EOFError, ValueError, ...)
            raise DatasetError(f"{self.root}: episode {i}'s video {path} cannot be decoded ({type(e).__name__}: "
                               f"{e}); {_fix_hint(self.root)}") from e


def _vectors(table: pa.Table, key: str, dim: int) -> np.ndarray:
    """A vector column (list or fixed-size list, as flexwm and LeRobot write them; a plain number for a
    1-dim feature) as float32 (T, dim); ValueError if any row does not have `dim` values."""
    arr = table[key].combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)):
        if dim != 1:
            raise ValueError(f"column {key} holds single numbers, expected vectors of {dim}")
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(arr), 1)
    if arr.null_count:
        raise ValueError(f"column {key} has {arr.null_count} empty (null) rows")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False) if len(arr) else np.zeros(0)
    if np.any(lengths != dim):
        raise ValueError(f"column {key} has rows of length {sorted(set(lengths.tolist()))}, expected {dim}")
    values = arr.flatten().to_numpy(zero_copy_only=False) if len(arr) else np.zeros(0)
    return np.asarray(values, dtype=np.float32).reshape(len(arr), dim)


def verify(root: str | Path, *, camera: str | None = None, outcome: str | None = None,
           action_key: str | None = None, state_key: str | None = None, progress: bool = False) -> dict:
    """Decode and check every episode.

    Returns {"root", "episodes", "frames", "ok", "damaged", "notes"}: `damaged` lists
    {"episode_index", "error"} for every episode that cannot be read back intact; `notes` lists harmless
    leftovers of an interrupted write (stale info.json/tasks.parquet, orphaned files), fixed by the next write.
    Raises DatasetError if the dataset cannot be opened at all. `progress`: a bar on stderr over the episodes.
    """
    from flexwm.metrics import progress_bar

    ds = FlexDataset(root, camera=camera, outcome=outcome, action_key=action_key, state_key=state_key)
    damaged, notes = [], []
    tasks = ds.task_list()
    with progress_bar(len(ds), "verify", enabled=progress, unit="ep") as bar:
        for i in range(len(ds)):
            try:
                cols, _ = ds._read(i)
                used = sorted(set(cols["task_index"].tolist()))
                names = {tasks[k] if 0 <= k < len(tasks) else None for k in used}
                if not names <= set(ds.episodes[i]["tasks"]):
                    raise DatasetError(f"{ds.root}: episode {i}'s data file {ds._data_file(i)} has "
                                       f"task_index {used} but its tasks are {ds.episodes[i]['tasks']} "
                                       f"(task list {tasks[:8]}); {_fix_hint(ds.root)}")
            except DatasetError as e:
                damaged.append({"episode_index": i, "error": str(e)})
            bar.update(1)
    on_disk = ds._info
    if (on_disk.get("total_episodes"), on_disk.get("total_frames")) != (len(ds), ds.num_frames):
        notes.append(f"info.json totals ({on_disk.get('total_episodes')} episodes, {on_disk.get('total_frames')} "
                     f"frames) are stale; meta/episodes (the source of truth) says {len(ds)} / {ds.num_frames}")
    stored = plain.read_tasks(ds.root)
    if tasks and stored != tasks:
        notes.append("meta/tasks.parquet differs from the tasks in meta/episodes (the source of truth)")
    orphans = (find_orphans(ds.root, len(ds), int(on_disk["chunks_size"])) if ds.flexwm_layout
               else find_packed_orphans(ds.root, ds.episodes) if ds.packed_by_flexwm else [])
    if orphans:
        notes.append(f"{len(orphans)} orphaned file(s) from an interrupted write are ignored, e.g. "
                     f"{orphans[0].relative_to(ds.root)}; a resumed write removes them")
    return {"root": str(ds.root), "episodes": len(ds), "frames": ds.num_frames, "ok": len(ds) - len(damaged),
            "damaged": damaged, "notes": notes}
