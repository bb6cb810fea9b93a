"""The LeRobot v3.0 dataset layout as flexwm writes it: paths, info.json, Arrow schemas and episode rows.

Layout (names follow huggingface/lerobot `datasets/utils.py` and `dataset_metadata.py`, CODEBASE_VERSION v3.0):

    meta/info.json                                    schema, fps, path templates, totals, flexwm block
    meta/stats.json                                   {feature: {min, max, mean, std, count}}
    meta/tasks.parquet                                task (pandas index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet          one row per episode (flexwm: one episode per file)
    data/chunk-CCC/file-FFF.parquet                   one row per step
    videos/observation.images.main/chunk-CCC/file-FFF.mp4

flexwm stores one episode per file, so episode i lives at chunk i // chunks_size, file i % chunks_size in all
three places. Paths are built from integer indices only, never from strings read from metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

CODEBASE_VERSION = "v3.0"
FLEXWM_SCHEMA_VERSION = 1
CHUNKS_SIZE = 1000  # LeRobot's DEFAULT_CHUNK_SIZE: files per chunk directory
DATA_FILES_SIZE_IN_MB = 100  # LeRobot defaults, recorded for compatibility (our files hold one episode each)
VIDEO_FILES_SIZE_IN_MB = 500

VIDEO_KEY = "observation.images.main"
STATE_KEY = "observation.state"  # proprioception (what the model sees)
ENV_STATE_KEY = "observation.env_state"  # privileged simulator state (analysis only)
ACTION_KEY = "action"
SUCCESS_KEY = "next.success"
STATS_KEYS = (ACTION_KEY, STATE_KEY, ENV_STATE_KEY)
STAT_NAMES = ("min", "max", "mean", "std", "count")

CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"

# video encoding: h264 yuv420p as LeRobot; crf 18 (mean abs error ~1.7-2.4 grey levels at 64x64, see video.py)
VIDEO_CODEC = "h264"
VIDEO_ENCODER = "libx264"
VIDEO_PIX_FMT = "yuv420p"
VIDEO_CRF = 18

EXTRA_COLUMN = "flexwm/extra"
# sha256 of the episode's data and video files, written with the episode; checked on every read (datasets
# written before these columns existed have none and are read unchecked)
DATA_SHA_COLUMN = "flexwm/data_sha256"
VIDEO_SHA_COLUMN = "flexwm/video_sha256"
FLEXWM_EPISODE_COLUMNS = ("outcome", "source", "noise", "embodiment", "env_task", "instruction", "seed",
                          EXTRA_COLUMN)


def chunk_file(episode_index: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """(chunk_index, file_index) of an episode's files: one episode per file."""
    return episode_index // chunks_size, episode_index % chunks_size


def data_path(root: Path, chunk: int, file: int) -> Path:
    return Path(root) / DATA_PATH.format(chunk_index=_index(chunk), file_index=_index(file))


def video_path(root: Path, chunk: int, file: int) -> Path:
    return Path(root) / VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=_index(chunk), file_index=_index(file))


def episode_meta_path(root: Path, chunk: int, file: int) -> Path:
    return Path(root) / EPISODES_PATH.format(chunk_index=_index(chunk), file_index=_index(file))


def _index(v: Any) -> int:
    """An index read from metadata, checked to be a plain non-negative integer (paths come only from these)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"a chunk/file index must be a non-negative integer, got {v!r}")
    return int(v)


# ---- info.json ---------------------------------------------------------------------------------------------


def make_features(image_size: tuple[int, int], action_dim: int, proprio_dim: int, state_dim: int,
                  fps: int) -> dict:
    """LeRobot `features`: dtype, shape, names (and `info` for the video) of every stored feature."""
    h, w = image_size
    return {
        VIDEO_KEY: {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h, "video.width": w, "video.codec": VIDEO_CODEC, "video.pix_fmt": VIDEO_PIX_FMT,
                "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False,
            },
        },
        STATE_KEY: {"dtype": "float32", "shape": [proprio_dim], "names": [f"proprio_{i}" for i in range(proprio_dim)]},
        ENV_STATE_KEY: {"dtype": "float32", "shape": [state_dim], "names": [f"state_{i}" for i in range(state_dim)]},
        ACTION_KEY: {"dtype": "float32", "shape": [action_dim], "names": [f"action_{i}" for i in range(action_dim)]},
        SUCCESS_KEY: {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def make_info(*, fps: int, image_size: tuple[int, int], action_dim: int, proprio_dim: int, state_dim: int,
              embodiment: str, action_low: list[float] | None, action_high: list[float] | None) -> dict:
    """A fresh info.json (no episodes yet), in LeRobot's `create_empty_dataset_info` form plus `flexwm`."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": embodiment,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": fps,
        "splits": {},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": make_features(image_size, action_dim, proprio_dim, state_dim, fps),
        "flexwm": {
            "schema_version": FLEXWM_SCHEMA_VERSION,
            "embodiment": embodiment,
            "image_size": [int(image_size[0]), int(image_size[1])],
            "action_dim": action_dim,
            "proprio_dim": proprio_dim,
            "state_dim": state_dim,
            "action_low": action_low,
            "action_high": action_high,
            "episodes_per_file": 1,
            "video": {"encoder": VIDEO_ENCODER, "pix_fmt": VIDEO_PIX_FMT, "crf": VIDEO_CRF},
        },
    }


def with_totals(info: dict, total_episodes: int, total_frames: int, total_tasks: int) -> dict:
    out = dict(info)
    out.update(total_episodes=total_episodes, total_frames=total_frames, total_tasks=total_tasks,
               splits={"train": f"0:{total_episodes}"} if total_episodes else {})
    return out


def schema_mismatches(info: dict, want: dict) -> list[str]:
    """Differences between a dataset's info.json and the schema a writer was asked for (one line each)."""
    fx = info.get("flexwm", {})
    have = {"fps": info.get("fps"), "embodiment": info.get("robot_type"), "image size": fx.get("image_size"),
            "action dim": fx.get("action_dim"), "proprio dim": fx.get("proprio_dim"),
            "state dim": fx.get("state_dim")}
    asked = {"fps": want["fps"], "embodiment": want["embodiment"], "image size": list(want["image_size"]),
             "action dim": want["action_dim"], "proprio dim": want["proprio_dim"], "state dim": want["state_dim"]}
    out = [f"{k} {have[k]} but {asked[k]} was asked for" for k in have if have[k] != asked[k]]
    for k in ("action_low", "action_high"):
        a, b = fx.get(k), want.get(k)
        if a is not None and b is not None and (len(a) != len(b) or not np.allclose(a, b, atol=1e-6)):
            out.append(f"{k.replace('_', ' ')} {a} but {b} was asked for")
    return out


# ---- Arrow schemas -----------------------------------------------------------------------------------------


def data_schema(action_dim: int, proprio_dim: int, state_dim: int) -> pa.Schema:
    """Per-step rows. Vectors are list<float32> columns, as LeRobot's pandas-written files hold them (and
    fixed-size lists of size 0 do not survive a parquet round trip); the reader checks every length."""
    del action_dim, proprio_dim, state_dim  # lengths are checked on write and read, not in the Arrow type
    return pa.schema([
        (STATE_KEY, pa.list_(pa.float32())),
        (ENV_STATE_KEY, pa.list_(pa.float32())),
        (ACTION_KEY, pa.list_(pa.float32())),
        (SUCCESS_KEY, pa.bool_()),
        ("timestamp", pa.float32()),
        ("frame_index", pa.int64()),
        ("episode_index", pa.int64()),
        ("index", pa.int64()),
        ("task_index", pa.int64()),
    ])


def episodes_schema() -> pa.Schema:
    """Per-episode rows of meta/episodes: LeRobot's columns, per-episode stats, then flexwm's columns."""
    fields = [
        ("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
        ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
        ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64()),
        (f"videos/{VIDEO_KEY}/chunk_index", pa.int64()), (f"videos/{VIDEO_KEY}/file_index", pa.int64()),
        (f"videos/{VIDEO_KEY}/from_timestamp", pa.float64()), (f"videos/{VIDEO_KEY}/to_timestamp", pa.float64()),
        ("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64()),
    ]
    for key in STATS_KEYS:
        for stat in STAT_NAMES:
            fields.append((f"stats/{key}/{stat}", pa.list_(pa.int64() if stat == "count" else pa.float64())))
    fields += [("outcome", pa.string()), ("source", pa.string()), ("noise", pa.float64()),
               ("embodiment", pa.string()), ("env_task", pa.string()), ("instruction", pa.string()),
               ("seed", pa.int64()), (EXTRA_COLUMN, pa.string()), (DATA_SHA_COLUMN, pa.string()),
               (VIDEO_SHA_COLUMN, pa.string())]
    return pa.schema(fields)


def array_stats(x: np.ndarray) -> dict[str, list]:
    """LeRobot per-feature stats of a (T, D) array: min/max/mean/std per dimension and the row count."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [len(x)]}


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot writes it with pandas: column task_index, index `task`."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.table({"task_index": list(range(len(tasks))), "task": list(tasks)}, schema=schema)
