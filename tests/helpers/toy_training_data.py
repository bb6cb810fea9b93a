"""A tiny synthetic dataset for training tests: a square that moves with the action (no simulator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flexwm.data import DatasetWriter, Episode, EpisodeMeta


def toy_episode(seed: int, outcome: str, T: int = 24, embodiment: str = "toy") -> Episode:
    rng = np.random.default_rng(seed)
    pos = np.cumsum(rng.normal(0, 1, (T, 2)), 0)
    frames = np.zeros((T, 32, 32, 3), np.uint8)
    for t in range(T):
        x, y = (np.clip(pos[t], -10, 10) + 14).astype(int)
        frames[t, y : y + 4, x : x + 4] = 255
    actions = np.diff(pos, axis=0, append=pos[-1:]).astype(np.float32)
    instr = {"success": "move the square", "failure": "move the square", "play": ""}[outcome]
    succ = np.zeros(T, bool)
    if outcome == "success":
        succ[T // 2 :] = True
    meta = EpisodeMeta(embodiment=embodiment, task="toy", instruction=instr, outcome=outcome,
                       source="play" if outcome == "play" else "expert", noise=0.0, seed=seed)
    return Episode(frames=frames, proprio=pos.astype(np.float32), actions=actions, success=succ,
                   state=pos.astype(np.float32), meta=meta, fps=10)


def write_toy_dataset(root: Path, n: int = 12, embodiment: str = "toy") -> Path:
    with DatasetWriter(root, fps=10, image_size=32, action_dim=2, proprio_dim=2, state_dim=2,
                       embodiment=embodiment) as w:
        for i, outcome in enumerate((["success", "failure", "play"] * n)[:n]):
            w.add(toy_episode(i, outcome, embodiment=embodiment))
    return root


def tiny_run(root: Path, n: int = 12, steps: int = 4) -> Path:
    """A tiny training run (toy data, tiny preset) in root/run; its data in root/toy."""
    from flexwm.training.run import preset, train_world_model

    write_toy_dataset(root / "toy", n)
    cfg = preset("tiny", data=[str(root / "toy")], tokenizer={"image_size": 32}, tokenizer_steps=10,
                 train={"steps": steps, "ckpt_every": steps, "log_every": steps})
    train_world_model(cfg, root / "run", progress=False)
    return root / "run"
