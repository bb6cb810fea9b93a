"""A plain LeRobot v3.0 dataset written the way LeRobot packs it (no flexwm code in the layout): several
episodes per data parquet and per mp4, meta/episodes files holding several rows, two cameras (h264 and, where
the ffmpeg build has an encoder, AV1 as LeRobot's default libsvtav1), a tasks table, no flexwm block.

Every value is a pure function of (camera, episode, step), so a test can rebuild what any frame must hold.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flexwm.data.video import encode_frames

FPS = 10
LENGTHS = (9, 12, 7, 11, 10)
TASKS = ("stack the red cube", "open the drawer")  # tasks.parquet order (task_index)
EPISODE_TASK = (1, 0, 1, 0, 0)  # episode 0 uses task 1: task_index order is not first-appearance order
STATE_DIM, ACTION_DIM = 6, 5
DATA_FILES = ((0, 1, 2), (3, 4))  # episodes per data parquet
META_FILES = ((0, 1), (2, 3, 4))  # episodes per meta/episodes parquet
TOP, WRIST = "observation.images.top", "observation.images.wrist"
AV1 = "libsvtav1" in av.codecs_available
# camera -> (encoder, options, episodes per mp4): LeRobot's own settings for AV1 (g=2, crf 30; crf 20 here)
CAMERAS = {
    TOP: ("libx264", {"crf": "18", "preset": "medium", "g": "8"}, ((0, 1), (2, 3, 4))),
    WRIST: (("libsvtav1", {"g": "2", "crf": "20", "preset": "10"}) if AV1 else ("libx264", {"crf": "18"}))
    + (((0, 1, 2, 3, 4),),),
}
CODEC_NAME = {"libx264": "h264", "libsvtav1": "av1"}


def band_level(camera: str, ep: int, t: int) -> int:
    """Grey level of the band across the top 8 rows: identifies (camera, episode, step) after decoding."""
    return 10 + 6 * ((ep * 5 + t + (7 if camera == WRIST else 0)) % 40)


def frames(camera: str, ep: int, h: int, w: int) -> np.ndarray:
    T = LENGTHS[ep]
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    t = np.arange(T)[:, None, None]
    phase = ep / 5 + (1.0 if camera == WRIST else 0.0)
    r = 128 + 90 * np.sin(np.pi * (x + 0.03 * t + phase))
    g = 128 + 90 * np.cos(np.pi * (y - 0.02 * t))
    b = 128 + 60 * np.sin(np.pi * (x + y) / 2 + phase) + 0 * t
    out = np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)
    for k in range(T):
        out[k, :8] = band_level(camera, ep, k)
    return out


def decoded_step(frame: np.ndarray, camera: str, ep: int) -> int:
    """The step whose band level `frame` shows (-1 if none)."""
    level = float(np.mean(frame[1:7, 1:-1]))
    hits = [t for t in range(LENGTHS[ep]) if abs(band_level(camera, ep, t) - level) < 3]
    return hits[0] if len(hits) == 1 else -1


def actions(ep: int) -> np.ndarray:
    return (np.arange(LENGTHS[ep])[:, None] * 0.1 + np.arange(ACTION_DIM) + ep).astype(np.float32)


def state(ep: int) -> np.ndarray:
    return np.random.default_rng(ep).normal(size=(LENGTHS[ep], STATE_DIM)).astype(np.float32)


def success(ep: int) -> np.ndarray:
    """next.success: episodes 0 and 3 succeed from their third-last step on, the others never."""
    T = LENGTHS[ep]
    return (np.arange(T) >= T - 3) if ep in (0, 3) else np.zeros(T, bool)


def _fixed(x: np.ndarray) -> pa.Array:
    """A vector column as HF datasets (LeRobot) writes it: fixed_size_list<float32>[D]."""
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])


def write_lerobot_dataset(root: Path, *, size: tuple[int, int] = (32, 48), cameras: tuple[str, ...] = (TOP, WRIST),
                          with_success: bool = True, robot_type: str | None = "so100",
                          action_key: str = "action", state_key: str = "observation.state") -> Path:
    """`action_key`/`state_key`: the feature names the actions and proprio state are stored under (hub datasets
    use others, e.g. action.joint_positions)."""
    root = Path(root)
    h, w = size
    starts = np.concatenate([[0], np.cumsum(LENGTHS)]).astype(int)

    # data: several episodes per parquet
    for f, eps in enumerate(DATA_FILES):
        cols: dict[str, list] = {k: [] for k in ("state", "action", "success", "ts", "fi", "ei", "ix", "ti")}
        for e in eps:
            T = LENGTHS[e]
            cols["state"].append(state(e))
            cols["action"].append(actions(e))
            cols["success"].append(success(e))
            cols["ts"].append(np.arange(T, dtype=np.float32) / FPS)
            cols["fi"].append(np.arange(T))
            cols["ei"].append(np.full(T, e))
            cols["ix"].append(np.arange(starts[e], starts[e] + T))
            cols["ti"].append(np.full(T, EPISODE_TASK[e]))
        c = {k: np.concatenate(v) for k, v in cols.items()}
        table = {state_key: _fixed(c["state"]), action_key: _fixed(c["action"])}
        if with_success:
            table["next.success"] = pa.array(c["success"])
        table.update({"timestamp": pa.array(c["ts"], pa.float32()), "frame_index": pa.array(c["fi"], pa.int64()),
                      "episode_index": pa.array(c["ei"], pa.int64()), "index": pa.array(c["ix"], pa.int64()),
                      "task_index": pa.array(c["ti"], pa.int64())})
        path = root / f"data/chunk-000/file-{f:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), path)

    # videos: several episodes per mp4, one continuous stream per file
    where: dict[tuple[str, int], tuple[int, float]] = {}
    for cam in cameras:
        codec, options, groups = CAMERAS[cam]
        for f, eps in enumerate(groups):
            t0 = 0
            for e in eps:
                where[(cam, e)] = (f, t0 / FPS)
                t0 += LENGTHS[e]
            path = root / f"videos/{cam}/chunk-000/file-{f:03d}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            encode_frames(np.concatenate([frames(cam, e, h, w) for e in eps]), str(path), container_format="mp4",
                          codec=codec, rate=Fraction(FPS, 1), options=options)

    # meta/episodes: several rows per file
    for f, eps in enumerate(META_FILES):
        rows = []
        for e in eps:
            file = next(k for k, g in enumerate(DATA_FILES) if e in g)
            row = {"episode_index": e, "tasks": [TASKS[EPISODE_TASK[e]]], "length": LENGTHS[e],
                   "data/chunk_index": 0, "data/file_index": file,
                   "dataset_from_index": int(starts[e]), "dataset_to_index": int(starts[e + 1])}
            for cam in cameras:
                vf, t0 = where[(cam, e)]
                row.update({f"videos/{cam}/chunk_index": 0, f"videos/{cam}/file_index": vf,
                            f"videos/{cam}/from_timestamp": t0, f"videos/{cam}/to_timestamp": t0 + LENGTHS[e] / FPS})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": f,
                        f"stats/{action_key}/mean": actions(e).mean(0).tolist()})
            rows.append(row)
        path = root / f"meta/episodes/chunk-000/file-{f:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)

    # as LeRobot's dataset tools write it: the task strings are pandas' unnamed index (reversed order here)
    index = "__index_level_0__"
    pandas_meta = {"index_columns": [index], "columns": [{"name": "task_index", "field_name": "task_index"},
                                                          {"name": None, "field_name": index}]}
    tasks = pa.table({"task_index": pa.array(range(len(TASKS)), pa.int64())[::-1], index: list(TASKS)[::-1]})
    pq.write_table(tasks.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), root / "meta/tasks.parquet")

    def video(cam: str) -> dict:
        return {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                "info": {"video.height": h, "video.width": w, "video.codec": CODEC_NAME[CAMERAS[cam][0]],
                         "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": FPS,
                         "video.channels": 3, "has_audio": False}}

    features = {cam: video(cam) for cam in cameras}
    features.update({
        state_key: {"dtype": "float32", "shape": [STATE_DIM], "names": [f"j{i}" for i in range(STATE_DIM)]},
        action_key: {"dtype": "float32", "shape": [ACTION_DIM], "names": [f"a{i}" for i in range(ACTION_DIM)]},
        **({"next.success": {"dtype": "bool", "shape": [1], "names": None}} if with_success else {}),
        **{k: {"dtype": d, "shape": [1], "names": None} for k, d in (
            ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
            ("task_index", "int64"))},
    })
    info = {"codebase_version": "v3.0", "robot_type": robot_type, "total_episodes": len(LENGTHS),
            "total_frames": int(starts[-1]), "total_tasks": len(TASKS), "chunks_size": 1000,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": FPS,
            "splits": {"train": f"0:{len(LENGTHS)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features}
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    return root
