"""Look at a dataset: counts by task/outcome/source/embodiment, and a video grid of episodes."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from flexwm.data.episode import OUTCOMES
from flexwm.data.reader import FlexDataset
from flexwm.data.video import encode_video
from flexwm.errors import DatasetError
from flexwm.io import atomic_write

# tile border colour by outcome in previews
OUTCOME_COLORS = {"success": (40, 200, 60), "failure": (220, 40, 40), "play": (70, 120, 230),
                  "unlabelled": (150, 150, 150)}


def dataset_info(root: str | Path, *, camera: str | None = None, outcome: str | None = None,
                 action_key: str | None = None, state_key: str | None = None) -> dict:
    """JSON-ready summary: sizes, schema (cameras, feature dims), tasks and episode counts by task, outcome,
    source and embodiment. `camera`/`outcome`/`action_key`/`state_key` as for FlexDataset."""
    ds = FlexDataset(root, camera=camera, outcome=outcome, action_key=action_key, state_key=state_key)
    eps = ds.episodes
    lengths = [int(e["length"]) for e in eps]
    outcomes = _outcome_columns(eps)
    by_task_outcome: dict[str, dict[str, int]] = {}
    for e in eps:
        row = by_task_outcome.setdefault(e["env_task"], dict.fromkeys(outcomes, 0))
        row[e["outcome"]] = row.get(e["outcome"], 0) + 1
    L = ds.layout
    return {
        "root": str(ds.root),
        "format": "flexwm" if ds.flexwm_layout or ds.packed_by_flexwm else "lerobot",
        "episodes": len(ds),
        "frames": ds.num_frames,
        "fps": ds.fps,
        "image_size": list(ds.image_size),
        "camera": ds.camera,
        "cameras": list(L.cameras),
        "embodiment": ds.embodiment,
        "action_dim": ds.action_dim,
        "proprio_dim": ds.proprio_dim,
        "state_dim": ds.state_dim,
        "features": {"action": L.action_key, "proprio": L.state_key, "env_state": L.env_state_key,
                     "success": L.success_key},
        "outcome_rule": ds.outcome_rule,
        "instructions": len(ds.task_list()),
        "tasks": dict(Counter(t for e in eps for t in e["tasks"][:1])),
        "length": {"min": min(lengths, default=0), "mean": float(np.mean(lengths)) if lengths else 0.0,
                   "max": max(lengths, default=0)},
        "by_task": dict(Counter(e["env_task"] for e in eps)),
        "by_outcome": dict(Counter(e["outcome"] for e in eps)),
        "by_source": dict(Counter(e["source"] for e in eps)),
        "by_embodiment": dict(Counter(e["embodiment"] for e in eps)),
        "by_task_outcome": by_task_outcome,
    }


def _outcome_columns(eps: list[dict]) -> list[str]:
    """success / failure / play always; unlabelled when the dataset has such episodes."""
    present = {e["outcome"] for e in eps}
    return [o for o in OUTCOMES if o != "unlabelled" or o in present]


def format_info(info: dict) -> str:
    """Plain-text report of `dataset_info`: a header, then one table row per task."""
    h, w = info["image_size"]
    ln = info["length"]
    cams = info.get("cameras") or [info.get("camera")]
    feats = info.get("features", {})
    lines = [
        f"dataset   {info['root']}  ({info.get('format', 'flexwm')} layout)",
        f"episodes  {info['episodes']}   frames {info['frames']}   fps {info['fps']}   image {h}x{w}",
        "cameras   " + ", ".join(f"{c} (read)" if c == info.get("camera") else str(c) for c in cams),
        f"schema    embodiment {info['embodiment']}   action {info['action_dim']}   proprio {info['proprio_dim']}"
        f"   state {info['state_dim']}   instructions {info['instructions']}",
        "features  " + "   ".join(f"{k} {v}" for k, v in feats.items() if v),
        f"length    min {ln['min']}   mean {ln['mean']:.1f}   max {ln['max']}",
        "sources   " + ", ".join(f"{k} {v}" for k, v in sorted(info["by_source"].items())),
        f"outcomes  rule {info.get('outcome_rule', 'labels')}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(info["by_outcome"].items())),
        "",
    ]
    names = sorted(info["by_task_outcome"])
    outcomes = [o for o in OUTCOMES if o != "unlabelled" or info["by_outcome"].get(o)]
    width = max([len("task"), *map(len, names)])
    header = f"{'task':<{width}}  " + "  ".join(f"{o:>10}" for o in outcomes) + f"  {'total':>8}"
    lines += [header, "-" * len(header)]
    for name in names:
        row = info["by_task_outcome"][name]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{row.get(o, 0):>10}" for o in outcomes)
                     + f"  {sum(row.values()):>8}")
    totals = info["by_outcome"]
    lines.append(f"{'all':<{width}}  " + "  ".join(f"{totals.get(o, 0):>10}" for o in outcomes)
                 + f"  {info['episodes']:>8}")
    return "\n".join(lines)


def write_preview(root: str | Path, out_path: str | Path, n_episodes: int = 16, fps: int | None = None,
                  border: int = 2, *, camera: str | None = None, outcome: str | None = None,
                  action_key: str | None = None, state_key: str | None = None) -> Path:
    """An mp4 grid of up to `n_episodes` episodes spread evenly over the dataset, each tile framed in its
    outcome's colour (green success, red failure, blue play, grey unlabelled). Shorter episodes hold their last
    frame."""
    ds = FlexDataset(root, camera=camera, outcome=outcome, action_key=action_key, state_key=state_key)
    if len(ds) == 0:
        raise DatasetError(f"{ds.root} has no episodes to preview")
    n = min(n_episodes, len(ds))
    ids = sorted(set(np.linspace(0, len(ds) - 1, n).round().astype(int).tolist()))
    episodes = [ds.load_episode(i) for i in ids]
    h, w = ds.image_size
    th, tw = h + 2 * border, w + 2 * border
    cols = math.ceil(math.sqrt(len(ids)))
    rows = math.ceil(len(ids) / cols)
    T = max(ep.length for ep in episodes)
    grid = np.zeros((T, rows * th, cols * tw, 3), np.uint8)
    for k, ep in enumerate(episodes):
        r, c = divmod(k, cols)
        y, x = r * th, c * tw
        grid[:, y:y + th, x:x + tw] = OUTCOME_COLORS.get(ep.meta.outcome, (128, 128, 128))
        frames = ep.frames[np.minimum(np.arange(T), ep.length - 1)]
        grid[:, y + border:y + border + h, x + border:x + border + w] = frames
    out_path = Path(out_path)
    atomic_write(out_path, lambda p: encode_video(grid, p, fps or ds.fps))
    return out_path
