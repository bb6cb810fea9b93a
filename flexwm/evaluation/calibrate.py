"""Calibrate the imagined-success threshold on held-out episodes replayed in imagination.

The success head is trained on real futures. On imagined futures (blurrier, drifting) the same threshold can be
over- or under-confident, which shifts every imagined success rate (policy evaluation) and is what RL in
imagination exploits. Calibration measures this on data with known outcomes, never on the policies evaluated:

    episodes = held-out dataset episodes (successes and failures / play)
    each is replayed open-loop in the world model from its real first frame (its own actions, frame_stride at a
    time), the head scores every imagined window under the task's canonical instruction, and the episode's
    imagined score is the maximum P(success) along the way (as in `evaluate_suite`)
    threshold = the cut on those scores with the best balanced accuracy against the episodes' real outcomes

    cal = calibrate_imagined_success(wm, episodes)        # {"threshold", "auc", "balanced_accuracy", ...}
    evaluate_suite(..., success_threshold=cal["threshold"])

The result also gives the ROC AUC of imagined scores vs real outcomes: how well the model's imagination alone
tells success from failure (0.5 = not at all), independent of any threshold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flexwm.errors import ConfigError
from flexwm.models.interface import WorldModel


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """ROC AUC (Mann-Whitney: P(score of a random positive > score of a random negative), ties count 1/2)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None]).mean()
    ties = (pos[:, None] == neg[None]).mean()
    return float(greater + 0.5 * ties)


def best_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """The cut t (predict success iff score > t) with the highest balanced accuracy, and that accuracy.
    Cuts lie midway between consecutive distinct scores (and just below / above all of them); ties in
    accuracy go to the cut closest to 0.5."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    if y.all() or not y.any():
        raise ConfigError(f"calibration needs both successes and failures, got {int(y.sum())} successes of {len(y)}")
    u = np.unique(s)
    cuts = np.concatenate([[max(0.0, u[0] - 1e-6)], (u[:-1] + u[1:]) / 2, [min(1.0, u[-1] + 1e-6)]])
    pred = s[None] > cuts[:, None]
    bacc = 0.5 * (pred[:, y].mean(1) + (~pred[:, ~y]).mean(1))
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    i = best[np.argmin(np.abs(cuts[best] - 0.5))]
    return float(cuts[i]), float(bacc[i])


def _canonical(episode: Any) -> str:
    from flexwm.envs.instructions import canonical_instruction
    from flexwm.errors import EnvError

    try:
        return canonical_instruction(episode.meta.task)
    except EnvError:
        return episode.meta.instruction


def replay_open_loop(wm: WorldModel, episodes: Sequence[Any], *, horizon: int | None = None, batch: int = 32,
                     seed: int = 0, instruction: Any = None, imagination: Any = None
                     ) -> Iterator[tuple[int, int, np.ndarray, Any]]:
    """Replay episodes open-loop in imagination from their first real frame, `batch` at a time, frame_stride
    of their own actions per step. Yields (first episode index of the batch, step k, live rows (bool, which
    episodes still have real actions at step k), the Imagination after step k); `imag.success` then holds the
    head's P(success) of every row's newest window. Shorter episodes hold their last action; their later
    steps are not live. `instruction(episode) -> str` defaults to the task's canonical instruction;
    `imagination` (default `Imagination`) is the class of the batch of imagined episodes."""
    from flexwm.rl.imagination import Imagination

    stride = int(wm.frame_stride)
    instruction = instruction or _canonical
    imagination = imagination or Imagination
    dims = sorted({int(np.asarray(e.actions).shape[-1]) for e in episodes})
    if dims and dims != [int(wm.action_dim)]:
        raise ConfigError(f"the episodes have {'- or '.join(map(str, dims))}-d actions but the world model expects "
                          f"{int(wm.action_dim)}-d actions; replay episodes of the embodiment the model was loaded "
                          "for (a dataset it was trained on)")
    for b in range(0, len(episodes), batch):
        eps = episodes[b:b + batch]
        lengths = np.array([min(e.length, horizon or e.length) // stride for e in eps])  # imagined frames
        if lengths.min() < 1:
            raise ConfigError(f"an episode is shorter than the model's frame_stride {stride}: nothing to imagine")
        frames = int(lengths.max())
        actions = np.zeros((len(eps), frames * stride, int(wm.action_dim)), np.float32)
        for i, e in enumerate(eps):
            a = e.actions[: lengths[i] * stride]
            actions[i, : len(a)] = a
            actions[i, len(a):] = a[-1]
        imag = imagination(wm, len(eps))
        imag.seed(range(len(eps)), [seed + b + i for i in range(len(eps))])
        imag.start(range(len(eps)), np.stack([e.frames[0] for e in eps]), [instruction(e) for e in eps])
        for k in range(frames):
            imag.step(actions[:, k * stride:(k + 1) * stride])
            yield b, k, lengths > k, imag


def replay_steps(wm: WorldModel, episodes: Sequence[Any], *, horizon: int | None = None, batch: int = 32) -> int:
    """How many steps `replay_open_loop` yields for these episodes (the length of its progress bar)."""
    stride = int(wm.frame_stride)
    return sum(max(min(e.length, horizon or e.length) // stride for e in episodes[b:b + batch])
               for b in range(0, len(episodes), batch))


def imagined_scores(wm: WorldModel, episodes: Sequence[Any], *, horizon: int | None = None, batch: int = 32,
                    seed: int = 0, instruction: Any = None, progress: bool = False) -> np.ndarray:
    """Max imagined P(success) of each episode replayed open-loop from its first frame (see the module doc).
    `progress`: a bar on stderr over the imagined steps."""
    from flexwm.metrics import progress_bar

    out = np.zeros(len(episodes))
    bar = progress_bar(replay_steps(wm, episodes, horizon=horizon, batch=batch) if progress else None,
                       "calibrate: imagine", enabled=progress, unit="step")
    for b, _, live, imag in replay_open_loop(wm, episodes, horizon=horizon, batch=batch, seed=seed,
                                             instruction=instruction):
        rows = b + np.flatnonzero(live)
        out[rows] = np.maximum(out[rows], imag.success.numpy()[live])
        bar.update(1)
    bar.close()
    return out


def calibrate_imagined_success(wm: WorldModel, episodes: Sequence[Any], *, horizon: int | None = None,
                               batch: int = 32, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Threshold, balanced accuracy and AUC of imagined success against the episodes' real outcomes (a real
    success anywhere in the first `horizon` steps). `progress`: a bar on stderr over the imagined steps."""
    if not episodes:
        raise ConfigError("calibration got no episodes; give held-out episodes with both outcomes")
    labels = np.array([bool(np.asarray(e.success[: horizon or e.length]).any()) for e in episodes])
    scores = imagined_scores(wm, episodes, horizon=horizon, batch=batch, seed=seed, progress=progress)
    threshold, bacc = best_threshold(scores, labels)
    at_half = 0.5 * (np.mean(scores[labels] > 0.5) + np.mean(scores[~labels] <= 0.5))
    return {"threshold": threshold, "balanced_accuracy": bacc, "balanced_accuracy_at_0.5": float(at_half),
            "auc": auc(scores, labels), "n_success": int(labels.sum()), "n_failure": int((~labels).sum()),
            "horizon": horizon, "seed": seed,
            "episodes": [{"task": e.meta.task, "outcome": e.meta.outcome, "seed": e.meta.seed, "real_success": bool(y),
                          "imagined_max_prob": float(s)} for e, y, s in zip(episodes, labels, scores)]}


# ---- `flexwm calibrate` and the thresholds that read its result ----------------------------------------------

CALIBRATION_FILE = "imagined_calibration.json"


def calibration_output(out: str | Path | None, ckpt: str | Path) -> Path:
    """OUT itself if it ends in .json, else OUT/imagined_calibration.json; OUT defaults to runs/eval/NAME/."""
    from flexwm.runs import results_dir

    out = Path(out) if out is not None else results_dir(ckpt)
    return out if out.suffix == ".json" else out / CALIBRATION_FILE


def calibrate_run(ckpt: str | Path, out: str | Path | None = None, *, data: str | Path | None = None,
                  tasks: Sequence[str] = (), max_episodes: int = 128, horizon: int | None = None, flow_steps: int = 4,
                  ac_noise: str = "sample", seed: int = 0, device: str = "cpu",
                  command: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Calibrate the training run at `ckpt` on up to `max_episodes` of its held-out episodes of `data` (default:
    its first dataset; only `tasks` if given) and write the result to `calibration_output(out, ckpt)`.
    `progress`: bars on stderr over loading the episodes and imagining them. Returns the result with "out": the
    file written."""
    from flexwm.config import check_device
    from flexwm.data import FlexDataset
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json
    from flexwm.metrics import progress_bar
    from flexwm.runs import run_heldout

    check_device(device)
    data, held = run_heldout(ckpt, data, "calibrate")
    ds = FlexDataset(data)
    wanted = set(tasks)
    # an unlabelled episode's outcome is unknown: it cannot be scored against imagination
    idx = [i for i in held if ds.episodes[i]["outcome"] != "unlabelled"
           and (not wanted or ds.episodes[i]["env_task"] in wanted)][:max_episodes]
    if not idx:
        raise ConfigError(f"no held-out episodes of tasks {sorted(wanted)} in {data}")
    wm = load_run(ckpt, steps=flow_steps, ac_noise=ac_noise, device=device)
    episodes = []
    with progress_bar(len(idx), "calibrate: load", enabled=progress, unit="ep") as bar:
        for i in idx:
            episodes.append(ds.load_episode(i))
            bar.update(1)
    res = calibrate_imagined_success(wm, episodes, horizon=horizon, seed=seed, progress=progress)
    res.update({"ckpt": str(ckpt), "data": str(data), "episode_indices": idx, "flow_steps": flow_steps,
                "ac_noise": ac_noise, "command": " ".join(command or [])})
    path = calibration_output(out, ckpt)
    atomic_write_json(path, res)
    return {**res, "out": str(path)}


def resolve_threshold(value: str | float, ckpt: str | Path, flow_steps: int,
                      calibration: str | Path | None = None) -> float:
    """A success threshold: a number in [0, 1], or "calibrated": the threshold `flexwm calibrate` found for this
    model at `flow_steps`, read from `calibration` (a file or the folder holding imagined_calibration.json),
    by default runs/eval/NAME/ and then the training run's own folder (where older versions wrote it)."""
    from flexwm.runs import resolve_run_dir, results_dir

    if value != "calibrated":
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0.0 <= number <= 1.0:
            raise ConfigError(f"--success-threshold {value!r} must be a number in [0, 1] or 'calibrated'")
        return number
    if calibration is not None:
        cands = [calibration_output(calibration, ckpt)]
    else:
        cands = [results_dir(ckpt) / CALIBRATION_FILE, resolve_run_dir(ckpt) / CALIBRATION_FILE]
    path = next((p for p in cands if p.exists()), None)
    if path is None:
        raise ConfigError(f"--success-threshold calibrated needs a calibration (looked at {[str(p) for p in cands]}); "
                          f"make it with flexwm calibrate --ckpt {ckpt}, or point --calibration at its output")
    cal = json.loads(path.read_text())
    if cal.get("flow_steps") != flow_steps:
        raise ConfigError(f"{path} was calibrated with {cal.get('flow_steps')} flow steps, not --flow-steps "
                          f"{flow_steps}; use the same or calibrate again")
    return float(cal["threshold"])
