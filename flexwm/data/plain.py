"""Datasets LeRobot wrote (plain LeRobot v3.0): which features flexwm reads, their packed episode metadata, and
the outcome a user declares for episodes that carry no flexwm labels.

LeRobot packs many episodes into each data parquet and each mp4; its meta/episodes rows locate them
(`data/chunk_index`, `data/file_index`, `dataset_from_index`..`dataset_to_index`, and per camera
`videos/<key>/chunk_index`, `file_index`, `from_timestamp`, `to_timestamp`). The tasks table gives the
instructions. Features are read by LeRobot's names:

    camera       any `video` feature (`camera=`; the default when there is exactly one)
    proprio      observation.state (absent: one constant 0, as the model takes a proprio input)
    env state    flexwm.env_state, observation.env_state (older flexwm) or observation.environment_state
    action       action
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


def _dim(ft: dict) -> int:
    shape = ft.get("shape") or [1]
    return int(np.prod([int(v) for v in shape]))


def _hw(ft: dict) -> tuple[int, int]:
    info = ft.get("info") or {}
    if isinstance(info.get("video.height"), int) and isinstance(info.get("video.width"), int):
        return int(info["video.height"]), int(info["video.width"])
    shape, names = list(ft.get("shape") or []), list(ft.get("names") or [])
    if len(shape) != 3:
        raise ValueError(f"shape {shape} is not (height, width, channels)")
    if names and names[0] in ("channel", "channels"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def resolve_layout(root: Path, info: dict, camera: str | None = None, embodiment: str | None = None) -> Layout:
    """The features flexwm reads from the dataset at `root`; DatasetError naming the choices if one is unclear."""
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
    if ACTION_KEY not in feats:
        raise DatasetError(f"{root} has no '{ACTION_KEY}' feature (features: {sorted(feats)}); flexwm needs actions")
    state_key = STATE_KEY if STATE_KEY in feats else None
    env_key = next((k for k in ENV_STATE_KEYS if k in feats), None)
    fx = info.get("flexwm") if isinstance(info.get("flexwm"), dict) else {}
    dims = {"action_dim": _dim(feats[ACTION_KEY]), "proprio_dim": _dim(feats[state_key]) if state_key else 1,
            "state_dim": _dim(feats[env_key]) if env_key else 0}
    if fx:  # flexwm's own block is authoritative for what it wrote
        dims = {k: int(fx[k]) for k in dims}
        image_size = (int(fx["image_size"][0]), int(fx["image_size"][1]))
    robot = info.get("robot_type")
    name = embodiment or (robot if isinstance(robot, str) and robot else DEFAULT_EMBODIMENT)
    return Layout(camera=camera, cameras=tuple(cams), action_key=ACTION_KEY, state_key=state_key,
                  env_state_key=env_key, success_key=SUCCESS_KEY if SUCCESS_KEY in feats else None,
                  image_size=image_size, embodiment=str(name), **dims)


def video_columns(camera: str) -> tuple[str, str, str, str]:
    return tuple(f"videos/{camera}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"))


PACKED_REQUIRED = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index")


def read_packed_rows(root: Path, files: list[Path], layout: Layout, fix_hint: str) -> list[dict[str, Any]]:
    """Episode rows from meta/episodes files holding any number of episodes each, in episode order; checked to
    number episodes 0..N-1 with consistent frame ranges. Per-episode stats columns are not read."""
    need = (*PACKED_REQUIRED, *video_columns(layout.camera))
    rows: list[dict[str, Any]] = []
    for path in sorted(files):
        try:
            names = pq.read_schema(path).names
            missing = [c for c in need if c not in names]
            if missing:
                raise DatasetError(f"{root}: episode metadata file {path} lacks columns {missing}; {fix_hint}")
            table = pq.read_table(path, columns=[c for c in names if not c.startswith("stats/")])
        except (pa.ArrowException, OSError) as e:
            raise DatasetError(f"{root}: episode metadata file {path} is damaged ({e}); {fix_hint}") from e
        rows += table.to_pylist()
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
    return rows


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
