"""Synthetic episodes for the data tests (numpy only, no simulator), and a writer loop to kill.

Run as a module from the repository root: `python -m tests.helpers.synth_data ROOT N [MB]` writes episodes
0..N-1 into ROOT, one after another (each a pure function of its index, so a test can rebuild what any
episode must contain), packing them into data and video files of about MB megabytes (default: LeRobot's).
"""

from __future__ import annotations

import sys

import numpy as np

from flexwm.data import DatasetWriter, Episode, EpisodeMeta
from flexwm.data.lerobot import INFO_PATH, make_info
from flexwm.io import atomic_write_json

H = W = 32
SCHEMA = dict(fps=10, image_size=(H, W), action_dim=4, proprio_dim=3, state_dim=5, embodiment="sawyer",
              action_low=[-1.0] * 4, action_high=[1.0] * 4)


def smooth_frames(T: int, h: int = H, w: int = W, phase: float = 0.0) -> np.ndarray:
    """A slowly moving colour gradient: the kind of image a codec should keep close."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    t = np.arange(T)[:, None, None]
    r = 128 + 90 * np.sin(np.pi * (x + 0.03 * t + phase))
    g = 128 + 90 * np.cos(np.pi * (y - 0.02 * t))
    b = 128 + 60 * np.sin(np.pi * (x + y) / 2 + phase) + 0 * t
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def counting_frames(T: int, h: int = H, w: int = W) -> np.ndarray:
    """Flat frames whose grey level encodes the step: frame t is 10 + 6 t (decode with `frame_step`)."""
    assert T <= 40
    return np.broadcast_to((10 + 6 * np.arange(T, dtype=np.uint8))[:, None, None, None], (T, h, w, 3)).copy()


def frame_step(frame: np.ndarray) -> int:
    return int(round((float(np.mean(frame)) - 10) / 6))


def make_episode(index: int, T: int | None = None, *, outcome: str | None = None, counting: bool = False,
                 instruction: str | None = None, task: str | None = None, h: int = H, w: int = W) -> Episode:
    """Episode `index`: deterministic in `index`. Actions are t + index/100 so each step is recognisable."""
    rng = np.random.default_rng(index)
    T = T if T is not None else 12 + index % 5
    outcome = outcome or ("success", "failure", "play")[index % 3]
    source = {"success": "expert", "failure": "noisy", "play": "play"}[outcome]
    if instruction is None:
        instruction = "" if outcome == "play" else ("open the door", "press the button")[index % 2]
    actions = np.repeat((np.arange(T) + index / 100)[:, None], SCHEMA["action_dim"], 1).astype(np.float32)
    return Episode(
        frames=counting_frames(T, h, w) if counting else smooth_frames(T, h, w, phase=index / 7),
        proprio=rng.normal(size=(T, SCHEMA["proprio_dim"])).astype(np.float32),
        actions=actions,
        success=(np.arange(T) >= T - 2) if outcome == "success" else np.zeros(T, bool),
        state=rng.normal(size=(T, SCHEMA["state_dim"])).astype(np.float32),
        meta=EpisodeMeta(embodiment="sawyer", task=task or ("door-open-v3", "button-press-v3")[index % 2],
                         instruction=instruction, outcome=outcome, source=source,
                         noise=0.3 if source == "noisy" else 0.0, seed=index, extra={"job_id": f"job-{index}"}),
    )


def write_episodes(root, indices, **schema) -> None:
    with DatasetWriter(root, **{**SCHEMA, **schema}) as writer:
        for i in indices:
            writer.add(make_episode(i))


def write_legacy_episodes(root, indices, **schema) -> None:
    """A dataset in the one-episode-per-file layout flexwm wrote before packing (the writer still appends to
    one; tests/fixtures/flexwm_one_per_file holds one written by that older flexwm)."""
    from pathlib import Path

    merged = {**SCHEMA, **schema}
    merged["image_size"] = tuple(merged["image_size"])
    atomic_write_json(Path(root) / INFO_PATH, make_info(**merged, packed=False))
    write_episodes(root, indices, **schema)


if __name__ == "__main__":
    root, n = sys.argv[1], int(sys.argv[2])
    mb = float(sys.argv[3]) if len(sys.argv) > 3 else None
    with DatasetWriter(root, **SCHEMA, data_files_size_in_mb=mb, video_files_size_in_mb=mb) as writer:
        for i in range(writer.num_episodes, n):
            writer.add(make_episode(i))
