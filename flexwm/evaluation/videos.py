"""Evaluation videos: real | imagined-plan side-by-side WebM files that the report embeds.

`save_eval_videos(dir, ...)` writes DIR/report/eval-POLICY-TASK-epK.webm and lists them in
DIR/report/eval_videos.json, DIR being an evaluation's output folder (or a training run for the demo).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from flexwm.io import atomic_write_json


def encode_webm(frames: np.ndarray, fps: int = 10) -> bytes:
    """uint8 (T, H, W, 3) -> WebM (VP9) bytes, which every browser plays."""
    from flexwm.data.video import encode_frames

    buf = io.BytesIO()
    encode_frames(np.asarray(frames, dtype=np.uint8), buf, container_format="webm", codec="libvpx-vp9",
                  rate=int(fps), options={"crf": "30", "b:v": "0", "deadline": "realtime", "cpu-used": "8"})
    return buf.getvalue()


def upscale(frames: np.ndarray, k: int) -> np.ndarray:
    return frames.repeat(k, axis=-3).repeat(k, axis=-2) if k > 1 else frames


def write_bytes(path: Path, data: bytes) -> None:
    from flexwm.io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def save_eval_videos(out_dir: str | Path, policy: str, task: str, videos: list[dict], scale: int = 3) -> None:
    """Real-simulator episodes (from evaluate_policy(record_video=k)) as real | imagined-plan videos, listed in
    OUT/report/eval_videos.json for the report. Imagined frames are black where no plan covered that step."""
    out = Path(out_dir) / "report"
    index = out / "eval_videos.json"
    items = [v for v in (json.loads(index.read_text()) if index.exists() else [])
             if not (v["policy"] == policy and v["task"] == task)]
    for v in videos:
        real, imag = np.asarray(v["real"]), np.asarray(v["imagined"])
        name = f"eval-{policy}-{task}-ep{v['episode']}.webm"
        write_bytes(out / name, encode_webm(upscale(np.concatenate([real, imag], 2), scale), fps=20))
        items.append({"policy": policy, "task": task, "episode": int(v["episode"]), "file": name,
                      "frames": int(len(real)), "plans": len(v.get("plans", []))})
    atomic_write_json(index, items)
