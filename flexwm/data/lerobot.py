"""The LeRobot v3.0 dataset layout as flexwm writes it: paths, info.json, Arrow schemas and episode rows.

Layout (names follow huggingface/lerobot `datasets/utils.py` and `dataset_metadata.py`, CODEBASE_VERSION v3.0):

    meta/info.json                                    schema, fps, path templates, totals, flexwm block
    meta/stats.json                                   {feature: {min, max, mean, std, count, q01..q99}}
    meta/tasks.parquet                                task (pandas index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet          one row per episode, many episodes per file
    data/chunk-CCC/file-FFF.parquet                   one row per step, many episodes per file
    videos/observation.images.main/chunk-CCC/file-FFF.mp4   many episodes per file, one after another
    meta/staging/episode-IIIIII.{parquet,mp4,meta.parquet}  the episodes of the file being filled (flexwm only)

As LeRobot does, flexwm packs episodes into data and video files that roll over to the next file index at a
size bound (`data_files_size_in_mb`, `video_files_size_in_mb` in info.json); meta/episodes rolls over at the data
bound. Until its file is full, an episode waits in meta/staging as its own three files (see writer.py); the
packed files are written once, whole. Datasets flexwm wrote before packing hold one episode per file
(`flexwm.episodes_per_file` = 1): episode i at chunk i // chunks_size, file i % chunks_size in all three places;
they are still read and appended to. Paths are built from integer indices and checked feature names only, never
from other strings read from metadata.

stats.json is in the shape LeRobot's `compute_stats` writes, so `lerobot-train` can normalise with it: vectors
per dimension, images per channel as (3, 1, 1) in [0, 1], each with the quantiles q01, q10, q50, q90, q99.
Privileged simulator state is stored as `flexwm.env_state`: outside `observation.*`, so LeRobot does not
offer it to a policy as an input (datasets written before used `observation.env_state`; both are read).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

CODEBASE_VERSION = "v3.0"
FLEXWM_SCHEMA_VERSION = 1
CHUNKS_SIZE = 1000  # LeRobot's DEFAULT_CHUNK_SIZE: files per chunk directory
DATA_FILES_SIZE_IN_MB = 100  # LeRobot's defaults: a data (and meta/episodes) file rolls over at this size
VIDEO_FILES_SIZE_IN_MB = 500

VIDEO_KEY = "observation.images.main"
STATE_KEY = "observation.state"  # proprioception (what the model sees)
ENV_STATE_KEY = "flexwm.env_state"  # privileged simulator state (analysis only; not a policy input)
LEGACY_ENV_STATE_KEY = "observation.env_state"  # its name in datasets written before (still read)
ACTION_KEY = "action"
SUCCESS_KEY = "next.success"
# the episode's outcome on every step (0 success, 1 failure, 2 play, 3 unlabelled): LeRobot's tools rewrite
# meta/episodes
# without flexwm's columns but keep data columns, so the label survives e.g. `delete_episodes`
OUTCOME_KEY = "flexwm.outcome"
OUTCOME_CODES = {"success": 0, "failure": 1, "play": 2, "unlabelled": 3}
STATS_KEYS = (ACTION_KEY, STATE_KEY, ENV_STATE_KEY)
STAT_NAMES = ("min", "max", "mean", "std", "count")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's DEFAULT_QUANTILES
QUANTILE_NAMES = tuple(f"q{int(q * 100):02d}" for q in QUANTILES)  # q01 q10 q50 q90 q99, as LeRobot names them

CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE_PATTERN + ".parquet"
STAGING_DIR = "meta/staging"  # flexwm's: episodes waiting for their packed file (LeRobot never looks here)

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


def chunk_file(index: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """(chunk_index, file_index) of the index-th file (in the one-episode-per-file layout: of episode `index`)."""
    return index // chunks_size, index % chunks_size


def staged_paths(root: Path, episode_index: int) -> tuple[Path, Path, Path]:
    """The data, video and metadata files of a staged episode (meta/staging; the metadata file is its commit)."""
    base = Path(root) / STAGING_DIR / f"episode-{_index(episode_index):06d}"
    return base.with_suffix(".parquet"), base.with_suffix(".mp4"), base.with_suffix(".meta.parquet")


def data_path(root: Path, chunk: int, file: int) -> Path:
    return Path(root) / DATA_PATH.format(chunk_index=_index(chunk), file_index=_index(file))


def video_path(root: Path, chunk: int, file: int, video_key: str = VIDEO_KEY) -> Path:
    return Path(root) / VIDEO_PATH.format(video_key=feature_name(video_key), chunk_index=_index(chunk),
                                          file_index=_index(file))


_FEATURE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def feature_name(key: Any) -> str:
    """A feature name read from metadata, checked to be usable as one path component (camera directories)."""
    if not isinstance(key, str) or not _FEATURE_NAME.fullmatch(key) or ".." in key:
        raise ValueError(f"feature name {key!r} is not a plain name (letters, digits, '_', '.', '-')")
    return key


def episode_meta_path(root: Path, chunk: int, file: int) -> Path:
    return Path(root) / EPISODES_PATH.format(chunk_index=_index(chunk), file_index=_index(file))


def _index(v: Any) -> int:
    """An index read from metadata, checked to be a plain non-negative integer (paths come only from these)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"a chunk/file index must be a non-negative integer, got {v!r}")
    return int(v)


# ---- info.json ---------------------------------------------------------------------------------------------


def make_features(image_size: tuple[int, int], action_dim: int, proprio_dim: int, state_dim: int,
                  fps: int, env_state_key: str = ENV_STATE_KEY) -> dict:
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
        env_state_key: {"dtype": "float32", "shape": [state_dim], "names": [f"state_{i}" for i in range(state_dim)]},
        ACTION_KEY: {"dtype": "float32", "shape": [action_dim], "names": [f"action_{i}" for i in range(action_dim)]},
        SUCCESS_KEY: {"dtype": "bool", "shape": [1], "names": None},
        OUTCOME_KEY: {"dtype": "int64", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def make_info(*, fps: int, image_size: tuple[int, int], action_dim: int, proprio_dim: int, state_dim: int,
              embodiment: str, action_low: list[float] | None, action_high: list[float] | None,
              data_files_size_in_mb: float = DATA_FILES_SIZE_IN_MB,
              video_files_size_in_mb: float = VIDEO_FILES_SIZE_IN_MB, packed: bool = True) -> dict:
    """A fresh info.json (no episodes yet), in LeRobot's `create_empty_dataset_info` form plus `flexwm`.
    packed=False: the one-episode-per-file layout of datasets written before packing (kept for tests)."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": embodiment,
        "total_episodes": 0,
        "total_frames": 0,
        "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": video_files_size_in_mb,
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
            "episodes_per_file": None if packed else 1,
            **({"packed": True} if packed else {}),
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


def data_schema(action_dim: int, proprio_dim: int, state_dim: int, env_state_key: str = ENV_STATE_KEY,
                outcome: bool = True) -> pa.Schema:
    """Per-step rows. Vectors are list<float32> columns, as LeRobot's pandas-written files hold them (and
    fixed-size lists of size 0 do not survive a parquet round trip); the reader checks every length."""
    del action_dim, proprio_dim, state_dim  # lengths are checked on write and read, not in the Arrow type
    return pa.schema([
        (STATE_KEY, pa.list_(pa.float32())),
        (env_state_key, pa.list_(pa.float32())),
        (ACTION_KEY, pa.list_(pa.float32())),
        (SUCCESS_KEY, pa.bool_()),
        *([(OUTCOME_KEY, pa.int64())] if outcome else []),
        ("timestamp", pa.float32()),
        ("frame_index", pa.int64()),
        ("episode_index", pa.int64()),
        ("index", pa.int64()),
        ("task_index", pa.int64()),
    ])


def episodes_schema(env_state_key: str = ENV_STATE_KEY) -> pa.Schema:
    """Per-episode rows of meta/episodes: LeRobot's columns, per-episode stats, then flexwm's columns."""
    fields = [
        ("episode_index", pa.int64()), ("tasks", pa.list_(pa.string())), ("length", pa.int64()),
        ("data/chunk_index", pa.int64()), ("data/file_index", pa.int64()),
        ("dataset_from_index", pa.int64()), ("dataset_to_index", pa.int64()),
        (f"videos/{VIDEO_KEY}/chunk_index", pa.int64()), (f"videos/{VIDEO_KEY}/file_index", pa.int64()),
        (f"videos/{VIDEO_KEY}/from_timestamp", pa.float64()), (f"videos/{VIDEO_KEY}/to_timestamp", pa.float64()),
        ("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64()),
    ]
    for key in (ACTION_KEY, STATE_KEY, env_state_key, VIDEO_KEY):
        for stat in STAT_NAMES + QUANTILE_NAMES:
            fields.append((f"stats/{key}/{stat}", pa.list_(pa.int64() if stat == "count" else pa.float64())))
    fields += [("outcome", pa.string()), ("source", pa.string()), ("noise", pa.float64()),
               ("embodiment", pa.string()), ("env_task", pa.string()), ("instruction", pa.string()),
               ("seed", pa.int64()), (EXTRA_COLUMN, pa.string()), (DATA_SHA_COLUMN, pa.string()),
               (VIDEO_SHA_COLUMN, pa.string())]
    return pa.schema(fields)


def optional_episode_columns(env_state_key: str = ENV_STATE_KEY) -> set[str]:
    """Columns of `episodes_schema` that datasets written by older flexwm versions lack (checksums, quantiles,
    image statistics): read when present, never required."""
    out = {DATA_SHA_COLUMN, VIDEO_SHA_COLUMN}
    out |= {f"stats/{k}/{q}" for k in (ACTION_KEY, STATE_KEY, env_state_key) for q in QUANTILE_NAMES}
    out |= {f"stats/{VIDEO_KEY}/{s}" for s in STAT_NAMES + QUANTILE_NAMES}
    return out


def array_stats(x: np.ndarray) -> dict[str, list]:
    """LeRobot per-feature stats of a (T, D) array: min/max/mean/std/quantiles per dimension and the row count."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    out = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
           "std": x.std(0).tolist(), "count": [len(x)]}
    qs = np.quantile(x, QUANTILES, axis=0) if x.shape[1] else np.zeros((len(QUANTILES), 0))
    out.update({name: q.tolist() for name, q in zip(QUANTILE_NAMES, qs)})
    return out


def image_sample_indices(n: int) -> np.ndarray:
    """The frames LeRobot samples for image statistics (`compute_stats.sample_indices`): all of up to 100,
    then ~n**0.75 spread evenly (at most 10,000)."""
    k = max(min(100, n), min(int(n**0.75), 10_000))
    return np.round(np.linspace(0, n - 1, k)).astype(int)


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """LeRobot image stats of uint8 (T, H, W, 3) frames: per channel, in [0, 1], over sampled frames (and, as
    LeRobot does, every k-th pixel of images of 300 pixels or more). Values are flat lists of 3; `stats_json`
    gives them LeRobot's (3, 1, 1) shape."""
    frames = np.asarray(frames)[image_sample_indices(len(frames))]
    h, w = frames.shape[1:3]
    if max(h, w) >= 300:
        step = int(max(h, w) / 150)
        frames = frames[:, ::step, ::step]
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0
    out = array_stats(x)
    out["count"] = [len(frames)]
    return out


def stats_json(stats: dict[str, list], image: bool) -> dict[str, list]:
    """One feature's entry of stats.json: image stats reshaped to LeRobot's per-channel (3, 1, 1)."""
    if not image:
        return stats
    return {k: v if k == "count" else [[[float(c)]] for c in v] for k, v in stats.items()}


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
