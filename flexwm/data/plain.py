"""Datasets LeRobot wrote (plain LeRobot v3.0): which features flexwm reads, their packed episode metadata, and
the outcome a user declares for episodes that carry no flexwm labels.

LeRobot packs many episodes into each data parquet and each mp4; its meta/episodes rows locate them
(`data/chunk_index`, `data/file_index`, `dataset_from_index`..`dataset_to_index`, and per camera
`videos/<key>/chunk_index`, `file_index`, `from_timestamp`, `to_timestamp`). The tasks table gives the
instructions. Features are read by LeRobot's names:

    camera       any `video` feature (`camera=`; the default when there is exactly one)
    proprio      observation.state (`state_key=` names another; absent: one constant 0, as the model takes a
                 proprio input)
    env state    flexwm.env_state, observation.env_state (older flexwm) or observation.environment_state
    action       action (`action_key=` names another, e.g. action.joint_positions)
    success      next.success (when present)

Outcomes. Episodes without flexwm's labels are "unlabelled": they train the action-conditioned, video and
inverse-dynamics modes but never the instruction-conditioned WAM/policy modes (like play data), and not the
success head. A user who knows better declares it (`outcome=`):

    labels          flexwm's labels where the dataset has them (in meta/episodes, or the outcome kept per step
                    in flexwm.outcome after LeRobot's tools rewrote the metadata), else unlabelled (the default)
    unlabelled      every episode unlabelled
    success-column  next.success per step; an episode succeeds if any of its steps does
    last-frame      every episode succeeds at its last frame
    success         curated successes: every episode succeeds (at next.success's first True, else the last frame)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flexwm.data.lerobot import (
    ACTION_KEY,
    ENV_STATE_KEY,
    EXTRA_COLUMN,
    LEGACY_ENV_STATE_KEY,
    OUTCOME_CODES,
    STATE_KEY,
    SUCCESS_KEY,
    TASKS_PATH,
    VIDEO_KEY,
    data_path,
    feature_name,
)
from flexwm.errors import ConfigError, DatasetError

OUTCOME_RULES = ("labels", "unlabelled", "success-column", "last-frame", "success")
ENV_STATE_KEYS = (ENV_STATE_KEY, LEGACY_ENV_STATE_KEY, "observation.environment_state")
FLEXWM_LABELS = ("outcome", "source", "noise", "embodiment", "env_task", "instruction", "seed")
DEFAULT_EMBODIMENT = "lerobot"


@dataclass(frozen=True)
class Layout:
    """What flexwm reads from a dataset: feature names, their sizes and the embodiment name."""

    camera: str
    cameras: tuple[str, ...]
    action_key: str
    state_key: str | None
    env_state_key: str | None
    success_key: str | None
    action_dim: int
    proprio_dim: int
    state_dim: int
    image_size: tuple[int, int]
    embodiment: str


def check_outcome_rule(outcome: str | None) -> str:
    rule = outcome or "labels"
    if rule not in OUTCOME_RULES:
        raise ConfigError(f"unknown outcome rule {outcome!r}; choose one of {list(OUTCOME_RULES)}")
    return rule


def check_image_size(size: int | tuple[int, int] | list[int] | None, stored: tuple[int, int]
                     ) -> tuple[int, int] | None:
    """The (H, W) frames are scaled to on decoding, or None to keep the stored size."""
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v >= 8 for v in hw):
        raise ConfigError(f"image size {size!r} must be an integer >= 8 or (height, width)")
    return None if tuple(hw) == tuple(stored) else (int(hw[0]), int(hw[1]))


def cameras_of(info: dict) -> list[str]:
    return [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]


def _sizes(values: Any, low: int = 1) -> bool:
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                                            for v in values)


def _dim(key: str, ft: Any) -> int:
    """The number of values per step of feature `key` (its shape's product; a scalar's is 1); ValueError if the
    shape is not a list of non-negative integers."""
    shape = ft.get("shape") if isinstance(ft, dict) else "missing"
    shape = shape or [1] if isinstance(shape, list) or shape is None else shape
    if not _sizes(shape, low=0):
        raise ValueError(f"feature {key!r} has shape {shape!r}; it must be a list of non-negative integers")
    return int(np.prod(shape))


def _hw(ft: dict) -> tuple[int, int]:
    info = ft.get("info") or {}
    if not isinstance(info, dict):
        raise ValueError(f"its 'info' is {info!r}, not an object")
    if isinstance(info.get("video.height"), int) and isinstance(info.get("video.width"), int):
        h, w = info["video.height"], info["video.width"]
        if not _sizes([h, w]):
            raise ValueError(f"video.height {h} and video.width {w} must be positive integers")
        return int(h), int(w)
    shape, names = ft.get("shape"), ft.get("names")
    if not (_sizes(shape) and len(shape) == 3):
        raise ValueError(f"shape {shape!r} is not (height, width, channels)")
    if isinstance(names, list) and names and names[0] in ("channel", "channels"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _feature_choice(root: Path, feats: dict, cams: list[str], fx: dict, what: str, option: str, key: str | None,
                    default: str) -> str | None:
    """The feature named by `key` (an option the user set), checked to exist and not to be a video; None when
    `key` is None. A dataset flexwm wrote (its info.json has a flexwm block) keeps `default`: any other name is an
    error rather than silently ignored."""
    if key is None:
        return None
    if fx and key != default:
        raise ConfigError(f"{root} was written by flexwm, which stores its {what} under {default!r}; {option} is for "
                          f"datasets flexwm did not write (drop {option} {key})")
    if key not in feats:
        raise DatasetError(f"{root} has no {what} feature {key!r} ({option}); its features are {sorted(feats)}")
    if key in cams:
        raise DatasetError(f"{root}: {key!r} ({option}) is a video feature; name the {what} vector instead (its "
                           f"features are {sorted(feats)})")
    return key


def resolve_layout(root: Path, info: dict, camera: str | None = None, embodiment: str | None = None, *,
                   action_key: str | None = None, state_key: str | None = None) -> Layout:
    """The features flexwm reads from the dataset at `root`; DatasetError naming the choices if one is unclear.
    `action_key`/`state_key` name the action and proprio features of a dataset flexwm did not write (default
    `action` and `observation.state`); ConfigError when one is given for a flexwm dataset under another name."""
    feats = info["features"]
    cams = cameras_of(info)
    images = [k for k, f in feats.items() if isinstance(f, dict) and f.get("dtype") == "image"]
    if camera is None:
        if not cams:
            stored = (f" (its image features {images} are stored as images, which flexwm does not read)"
                      if images else "")
            raise DatasetError(f"{root} has no video feature{stored}; flexwm trains on video: encode the camera as "
                               "video (LeRobot's default, `use_videos=True`)")
        if len(cams) > 1:
            raise DatasetError(f"{root} has {len(cams)} cameras {cams}; choose one with --camera (e.g. "
                               f"--camera {cams[0]})")
        camera = cams[0]
    elif camera not in cams:
        raise DatasetError(f"{root} has no camera {camera!r}; its cameras are {cams}")
    try:
        feature_name(camera)
        image_size = _hw(feats[camera])
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{root}: camera {camera!r} in meta/info.json cannot be read ({e})") from e
    fx = info.get("flexwm") if isinstance(info.get("flexwm"), dict) else {}
    action_key = _feature_choice(root, feats, cams, fx, "action", "--action-key", action_key, ACTION_KEY)
    state_key = _feature_choice(root, feats, cams, fx, "proprio state", "--state-key", state_key, STATE_KEY)
    if action_key is None:
        if ACTION_KEY not in feats:
            like = [k for k in sorted(feats) if k.startswith(ACTION_KEY)]
            example = f" (e.g. --action-key {like[0]})" if like else ""
            raise DatasetError(f"{root} has no '{ACTION_KEY}' feature (features: {sorted(feats)}); flexwm needs "
                               f"actions: name the action feature with --action-key{example}")
        action_key = ACTION_KEY
    if state_key is None:
        state_key = STATE_KEY if STATE_KEY in feats else None
    env_key = next((k for k in ENV_STATE_KEYS if k in feats), None)
    try:
        dims = {"action_dim": _dim(action_key, feats[action_key]),
                "proprio_dim": _dim(state_key, feats[state_key]) if state_key else 1,
                "state_dim": _dim(env_key, feats[env_key]) if env_key else 0}
    except ValueError as e:
        raise DatasetError(f"{root}: meta/info.json cannot be read ({e}); restore it from a copy of the dataset") from e
    if fx:  # flexwm's own block is authoritative for what it wrote
        dims = {k: int(fx[k]) for k in dims}
        image_size = (int(fx["image_size"][0]), int(fx["image_size"][1]))
    robot = info.get("robot_type")
    if robot is not None and not isinstance(robot, str):
        raise DatasetError(f"{root}: meta/info.json has robot_type = {robot!r}; it must be a string naming the robot "
                           "(or null); fix it, or name the embodiment yourself (embodiment=)")
    name = embodiment or robot or DEFAULT_EMBODIMENT
    return Layout(camera=camera, cameras=tuple(cams), action_key=action_key, state_key=state_key,
                  env_state_key=env_key, success_key=SUCCESS_KEY if SUCCESS_KEY in feats else None,
                  image_size=image_size, embodiment=str(name), **dims)


def video_columns(camera: str) -> tuple[str, str, str, str]:
    return tuple(f"videos/{camera}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"))


PACKED_REQUIRED = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index")


def read_packed_rows(root: Path, files: list[Path], layout: Layout, fix_hint: str,
                     total_episodes: Any = None, fps: int = 1, *, stats: bool = False,
                     scan_data: bool = True) -> list[dict[str, Any]]:
    """Episode rows from meta/episodes files holding any number of episodes each, in episode order; checked to
    number episodes 0..N-1 with consistent frame ranges, to be as many as info.json's `total_episodes` says
    (when it is a number: LeRobot writes it with the metadata, so fewer rows mean a lost or unfinished
    meta/episodes file), and to give the episodes that share a video file time ranges that do not overlap
    (`check_video_ranges`). Per-episode stats columns are read only with stats=True. Without a usable
    `total_episodes`, the data files are scanned for episodes the metadata lost, unless scan_data=False (flexwm's
    own datasets, whose reader checks the count against info.json itself, and which are opened from meta only)."""
    need = (*PACKED_REQUIRED, *video_columns(layout.camera))
    rows: list[dict[str, Any]] = []
    for path in sorted(files):
        try:
            names = pq.read_schema(path).names
            missing = [c for c in need if c not in names]
            if missing:
                raise DatasetError(f"{root}: episode metadata file {path} lacks columns {missing}; {fix_hint}")
            table = pq.read_table(path, columns=[c for c in names if stats or not c.startswith("stats/")])
            rows += table.to_pylist()
        except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: e.g. text that is not UTF-8
            raise DatasetError(f"{root}: episode metadata file {path} is damaged ({e}); {fix_hint}") from e
    rows.sort(key=lambda r: (r["episode_index"] is None, r["episode_index"]))
    for i, r in enumerate(rows):
        if r["episode_index"] != i:
            raise DatasetError(f"{root}: meta/episodes holds episode indices {[x['episode_index'] for x in rows[:8]]}"
                               f"{'...' if len(rows) > 8 else ''}, not 0..{len(rows) - 1} (episode {i} is missing "
                               f"or repeated); {fix_hint}")
        length, start, end = r["length"], r["dataset_from_index"], r["dataset_to_index"]
        if not (isinstance(length, int) and length >= 1 and isinstance(start, int) and end == start + length):
            raise DatasetError(f"{root}: episode {i}'s metadata has length {length} but frames {start}..{end}; "
                               f"{fix_hint}")
        for c in video_columns(layout.camera):
            if r.get(c) is None:
                raise DatasetError(f"{root}: episode {i}'s metadata has no {c}; {fix_hint}")
        tasks = r["tasks"]
        if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)):
            raise DatasetError(f"{root}: episode {i}'s metadata has tasks {tasks!r}; LeRobot gives every episode a "
                               f"list of its task strings; {fix_hint}")
    if isinstance(total_episodes, int) and not isinstance(total_episodes, bool):
        if total_episodes != len(rows):
            raise DatasetError(f"{root}: meta/episodes holds {len(rows)} episode rows ({len(files)} files) but "
                               f"meta/info.json says total_episodes = {total_episodes}; a meta/episodes file is "
                               "missing or damaged, or the recording was never finalized (LeRobot's "
                               f"dataset.finalize()). {fix_hint[0].upper()}{fix_hint[1:]}")
    elif scan_data:  # no usable count in info.json: the data files tell which episodes exist
        stored = max_data_episode(root)
        if stored is not None and stored >= len(rows):
            raise DatasetError(f"{root}: the data files hold episode {stored} but meta/episodes describes only "
                               f"episodes 0..{len(rows) - 1}; a meta/episodes file is missing or damaged; {fix_hint}")
    check_video_ranges(root, rows, layout.camera, fps, fix_hint)
    return rows


def max_data_episode(root: Path) -> int | None:
    """The highest episode_index in the data files (only that column is read; unreadable files are skipped, the
    episodes in them are reported when read). None if no file can be read."""
    best = None
    for path in sorted((Path(root) / "data").glob("chunk-*/file-*.parquet")):
        try:
            col = pq.read_table(path, columns=["episode_index"])["episode_index"]
            top = pc.max(col).as_py()
        except (pa.ArrowException, OSError, KeyError, ValueError):
            continue
        if isinstance(top, int):
            best = top if best is None else max(best, top)
    return best


def check_video_ranges(root: Path, rows: list[dict[str, Any]], camera: str, fps: int, fix_hint: str) -> None:
    """LeRobot appends each episode's frames to a camera's mp4, so the episodes of one file hold time ranges
    [from_timestamp, to_timestamp) that start at or after 0 and never overlap (half a frame of rounding allowed).
    A row pointing at the wrong file or time would decode another episode's frames without any error; this
    catches it from the metadata alone."""
    chunk_c, file_c, from_c, to_c = video_columns(camera)
    tol = 0.5 / max(int(fps), 1)
    by_file: dict[tuple[Any, Any], list[tuple[float, float, int]]] = {}
    for i, r in enumerate(rows):
        start, end = r[from_c], r[to_c]
        if not (isinstance(start, (int, float)) and isinstance(end, (int, float)) and -tol <= start < end):
            raise DatasetError(f"{root}: episode {i}'s metadata has {from_c} {start!r} and {to_c} {end!r}, not a "
                               f"time range in its video; {fix_hint}")
        by_file.setdefault((r[chunk_c], r[file_c]), []).append((float(start), float(end), i))
    for (chunk, file), ranges in by_file.items():
        ranges.sort()
        for (_, end, i), (start, _, j) in zip(ranges, ranges[1:]):
            if start < end - tol:
                raise DatasetError(f"{root}: episodes {i} and {j} claim overlapping times of the same video ({camera}"
                                   f", chunk {chunk}, file {file}: {start:.3f} s < {end:.3f} s); one of their "
                                   f"metadata rows points at the wrong file or time; {fix_hint}")


def read_tasks(root: Path) -> list[str] | None:
    """meta/tasks.parquet as a list indexed by task_index (None if it cannot be read)."""
    try:
        table = pq.read_table(Path(root) / TASKS_PATH)
        # the task strings are pandas' index: named `task` when flexwm writes it, `__index_level_0__` as
        # LeRobot's tools write it (an unnamed index)
        index = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns") or []
        name = next((c for c in ["task", *index] if isinstance(c, str) and c in table.column_names), "task")
        idx, names = table["task_index"].to_pylist(), table[name].to_pylist()
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return None
    if sorted(idx) != list(range(len(idx))):
        return None
    out = [""] * len(idx)
    for k, name in zip(idx, names):
        out[k] = str(name)
    return out


def check_episode_tasks(root: Path, rows: list[dict], tasks: list[str], fix_hint: str) -> None:
    """Every episode's task strings are in the tasks table (LeRobot adds a task there before any episode uses
    it), so a damaged string in meta/episodes is not read as another instruction."""
    known = set(tasks)
    for i, r in enumerate(rows):
        unknown = [t for t in r["tasks"] if t not in known]
        if unknown:
            raise DatasetError(f"{root}: episode {i}'s metadata names tasks {unknown} that {TASKS_PATH} does not "
                               f"hold (it holds {tasks[:8]}{'...' if len(tasks) > 8 else ''}); {fix_hint}")


def episode_values(root: Path, rows: list[dict], key: str, fix_hint: str) -> list[set]:
    """Per episode: the set of values its steps hold in data column `key` (reads only that column)."""
    out: list[set] = [set() for _ in rows]
    by_file: dict[tuple[int, int], list[int]] = {}
    for i, r in enumerate(rows):
        by_file.setdefault((r["data/chunk_index"], r["data/file_index"]), []).append(i)
    for (chunk, file), eps in by_file.items():
        try:
            t = pq.read_table(data_path(root, chunk, file), columns=["episode_index", key])
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DatasetError(f"{root}: the data file of episodes {eps[:4]} cannot be read for {key} ({e}); "
                               f"{fix_hint}") from e
        wanted = set(eps)
        for i, v in zip(t["episode_index"].to_pylist(), t[key].to_pylist()):
            if i in wanted:
                out[i].add(v)
    return out


def stored_outcome(values: set) -> str | None:
    """The outcome a flexwm.outcome data column gives an episode (None unless one known code)."""
    names = {v: k for k, v in OUTCOME_CODES.items()}
    return names.get(next(iter(values))) if len(values) == 1 else None


def label_episode(row: dict, rule: str, layout: Layout, any_success: bool | None,
                  outcome: str | None = None) -> dict[str, Any]:
    """The episode dict flexwm's readers use, with flexwm's labels kept or the declared outcome applied.
    `outcome`: the label kept in the data (flexwm.outcome) of an episode whose metadata lost flexwm's columns."""
    ep = {k: v for k, v in row.items() if not k.startswith("stats/")}
    names = [str(t) for t in (row.get("tasks") or [])]
    ep["tasks"] = names
    labelled = all(row.get(k) is not None for k in FLEXWM_LABELS)
    if labelled:
        try:
            ep["extra"] = json.loads(row.get(EXTRA_COLUMN) or "{}")
        except ValueError:
            ep["extra"] = {}
    else:
        instruction = names[0] if names else ""
        ep.update(outcome=outcome or "unlabelled", source="external", noise=0.0, embodiment=layout.embodiment,
                  env_task=instruction or "(no task)", instruction=instruction, seed=-1, extra={})
        labelled = outcome is not None
    if layout.camera != VIDEO_KEY:
        ep["camera"] = layout.camera  # part of the episode's identity: another camera gives other frames
    if layout.action_key != ACTION_KEY:
        ep["action_key"] = layout.action_key  # likewise: other features give other actions/proprio
    if layout.state_key not in (None, STATE_KEY):
        ep["state_key"] = layout.state_key
    if rule == "unlabelled" or (rule == "labels" and not labelled):
        ep["outcome"] = "unlabelled"
    elif rule in ("last-frame", "success"):
        ep["outcome"] = "success"
    elif rule == "success-column":
        ep["outcome"] = "success" if any_success else "failure"
    if rule != "labels":
        ep["outcome_rule"] = rule  # declared, not stored: part of the episode's identity for caches
    return ep


def declared_success(rule: str, flags: np.ndarray | None, T: int) -> np.ndarray:
    """Per-step success flags under an outcome rule (flags: the stored next.success column, or None)."""
    stored = np.zeros(T, bool) if flags is None else np.asarray(flags, bool)
    if rule == "last-frame" or (rule == "success" and not stored.any()):
        out = np.zeros(T, bool)
        out[-1] = True
        return out
    return stored
