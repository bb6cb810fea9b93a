"""Re-fit the success head on the model's own imagined futures (an imagination-aware reward model).

The success head is trained on real futures, but every use of it scores *imagined* ones: best-of-N, CEM/MPPI,
hybrid, closed-loop policy evaluation and RL in imagination. On imagined futures it is over-confident (a
failure replayed in imagination often drifts into something the head calls success), which RL exploits and
which makes imagined success rates too high for closed-loop policies. Here the head's success row is re-fitted
on exactly that distribution, with the real outcome as the label:

    episodes = training episodes (successes, failures and play; never the run's held-out ones)
    each is replayed open-loop in the world model from its first real frame under its own actions
    (`replay_open_loop`, frame_stride actions a step); at step k the head's input feature of the imagined window
    is recorded with label = "the real episode has succeeded by that time"
    logistic regression on those features, started from the trained head and pulled towards it (L2 on the
    difference; strength chosen on 20% of the episodes held out by episode), then refitted on all of them

This re-fits a FlexWorldModel's own head, so it takes a `FlexWorldModelWrapper` (what `load_run` returns) and
uses its success-head methods (`score_features`, `success_logit`, `weights_with_success_logit`), not the narrow
WorldModel interface. Only `head.weight[0]` / `head.bias[0]` (the success logit) change: the transformer, the
generative modes and the progress output are untouched, so acting and imagining are exactly as before. The result is
a new checkpoint directory usable wherever a run is (`--ckpt OUT`); `flexwm calibrate --ckpt OUT` then measures it on
the run's held-out episodes.

    res = tune_success_head("runs/NAME", "runs/NAME-ih", episodes)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.errors import ConfigError
from flexwm.evaluation.calibrate import auc, replay_open_loop, replay_steps
from flexwm.models.interface import FlexWorldModelWrapper, LatentState
from flexwm.rl.imagination import Imagination


class FeatureImagination(Imagination):
    """Imagination that also keeps the success head's input feature (n, d) of every row's newest window."""

    def __init__(self, wm: FlexWorldModelWrapper, n: int):
        if not isinstance(wm, FlexWorldModelWrapper):
            raise ConfigError(f"re-fitting the success head needs a FlexWorldModelWrapper (load_run); got "
                              f"{type(wm).__name__}")
        super().__init__(wm, n)
        self.features: Tensor | None = None

    def _score_group(self, rows: list[int], state: LatentState, future: Tensor,
                     instruction: str | None) -> tuple[Tensor, Tensor]:
        p, progress, feat = self.wm.score_features(state, future, instruction)
        feat = feat.float().cpu()
        if self.features is None:
            self.features = torch.zeros(self.n, feat.shape[1])
        self.features[rows] = feat
        return p, progress


def imagined_head_features(wm: FlexWorldModelWrapper, episodes: Sequence[Any], *, horizon: int | None = None,
                           batch: int = 32, seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
    """Head input features of every imagined window of every episode (open-loop replay) with real labels.
    Returns {"features" (N, d) float32, "labels" (N,) bool: real success by the newest frame's time,
    "episode" (N,) index into `episodes`, "step" (N,), "old_prob" (N,): the current head's P(success)}.
    `progress`: a bar on stderr over the imagined steps."""
    from flexwm.metrics import progress_bar

    stride = int(wm.frame_stride)
    succeeded = [np.maximum.accumulate(np.asarray(e.success, bool)) for e in episodes]
    feats, labels, owner, steps, old = [], [], [], [], []
    bar = progress_bar(replay_steps(wm, episodes, horizon=horizon, batch=batch) if progress else None,
                       "tune-head: imagine", enabled=progress, unit="step")
    for b, k, live, imag in replay_open_loop(wm, episodes, horizon=horizon, batch=batch, seed=seed,
                                             imagination=FeatureImagination):
        rows = np.flatnonzero(live)
        feats.append(imag.features[rows].numpy())
        old.append(imag.success.numpy()[rows])
        for r in rows:
            s = succeeded[b + r]
            labels.append(bool(s[min((k + 1) * stride, len(s)) - 1]))
        owner.append(b + rows)
        steps.append(np.full(len(rows), k))
        bar.update(1)
    bar.close()
    return {"features": np.concatenate(feats).astype(np.float32), "labels": np.asarray(labels, bool),
            "episode": np.concatenate(owner), "step": np.concatenate(steps), "old_prob": np.concatenate(old)}


def fit_logistic(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: float, l2: float,
                 iterations: int = 200) -> tuple[np.ndarray, float]:
    """argmin over (w, b) of mean BCE(x @ w + b, y) + l2 * |w - w0|^2, from (w0, b0), by L-BFGS."""
    X, Y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    ref = torch.as_tensor(w0, dtype=torch.float64)
    w, b = ref.clone().requires_grad_(True), torch.tensor(float(b0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + l2 * (w - ref).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def episode_auc(prob: np.ndarray, labels: np.ndarray, owner: np.ndarray) -> float:
    """AUC of each episode's max P(success) against whether it ever succeeded (as policy evaluation uses it)."""
    eps = np.unique(owner)
    best = np.array([prob[owner == e].max() for e in eps])
    real = np.array([labels[owner == e].any() for e in eps])
    return auc(best, real)


def fit_success_head(data: dict[str, np.ndarray], w0: np.ndarray, b0: float, *,
                     l2_grid: Sequence[float] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), val_fraction: float = 0.2,
                     seed: int = 0) -> dict[str, Any]:
    """Pick the L2 strength on held-out episodes (episode-level AUC), refit on all; returns w, b and a report."""
    x, y, owner = data["features"], data["labels"], data["episode"]
    if y.all() or not y.any():
        raise ConfigError(f"re-fitting the head needs imagined windows of both outcomes, got {int(y.sum())} "
                          f"successes of {len(y)}; use episodes with successes and failures / play")
    eps = np.unique(owner)
    rng = np.random.default_rng(seed)
    val_eps = rng.choice(eps, size=max(1, int(round(val_fraction * len(eps)))), replace=False)
    val = np.isin(owner, val_eps)
    if y[~val].all() or not y[~val].any() or y[val].all() or not y[val].any():
        raise ConfigError("the episodes are too few to hold some out with both outcomes; give more episodes")
    base = {"window_auc": auc(_sigmoid(x[val] @ w0 + b0), y[val]),
            "episode_auc": episode_auc(_sigmoid(x[val] @ w0 + b0), y[val], owner[val])}
    grid = []
    for l2 in l2_grid:
        w, b = fit_logistic(x[~val], y[~val], w0, b0, l2)
        p = _sigmoid(x[val] @ w + b)
        grid.append({"l2": float(l2), "window_auc": auc(p, y[val]), "episode_auc": episode_auc(p, y[val], owner[val])})
    best = max(grid, key=lambda g: (np.nan_to_num(g["episode_auc"]), np.nan_to_num(g["window_auc"])))
    w, b = fit_logistic(x, y, w0, b0, best["l2"])
    return {"weight": w, "bias": b, "l2": best["l2"], "validation": {"episodes": int(len(val_eps)),
            "windows": int(val.sum()), "trained_head": base, "grid": grid}}


def fit_logistic_max(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: float, l2: float,
                     iterations: int = 300, lr: float = 0.01) -> tuple[np.ndarray, float]:
    """Multiple-instance logistic fit: x (E, T, d) window features of E episodes, y (E,) their real outcomes.
    argmin over (w, b) of mean BCE(max_t (x[e, t] @ w + b), y[e]) + l2 * |w - w0|^2, from (w0, b0), by Adam.
    The episode's score is its highest window logit, exactly what policy evaluation thresholds (the max
    imagined P(success) over the episode), so the fit targets that decision and not per-window labels, which
    a closed-loop imagined rollout does not have (its frames are not the real episode's)."""
    X, Y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    ref = torch.as_tensor(w0, dtype=torch.float32)
    w, b = ref.clone().requires_grad_(True), torch.tensor(float(b0), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(iterations):
        opt.zero_grad()
        z = (X @ w + b).amax(dim=1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, Y) + l2 * (w - ref).pow(2).sum()
        loss.backward()
        opt.step()
    return w.detach().numpy().astype(np.float64), float(b.detach())


def fit_success_head_episodes(x: np.ndarray, y: np.ndarray, group: np.ndarray, w0: np.ndarray, b0: float, *,
                              l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)) -> dict[str, Any]:
    """Re-fit the success row on imagined episodes with real outcomes (`fit_logistic_max`), choosing the L2
    strength by leave-one-group-out episode AUC (groups: e.g. tasks, so the choice rewards what carries over
    to unseen tasks), then refitting on all episodes. Returns weight, bias, l2 and the validation report."""
    from flexwm.evaluation.calibrate import auc

    if y.all() or not y.any():
        raise ConfigError(f"re-fitting the head needs episodes of both outcomes, got {int(y.sum())} successes of "
                          f"{len(y)}")
    groups = np.unique(group)
    if len(groups) < 2:
        raise ConfigError("re-fitting the head needs episodes from at least two groups (tasks) to validate on")
    score = lambda w, b, m: np.max(x[m] @ w + b, axis=1)  # noqa: E731 - episode logit: the best window
    base = auc(score(w0, b0, np.ones(len(y), bool)), y)
    grid = []
    for l2 in l2_grid:
        held_scores, held_labels = [], []
        for g in groups:
            train = group != g
            if y[train].all() or not y[train].any():
                continue
            w, b = fit_logistic_max(x[train], y[train], w0, b0, l2)
            held_scores.append(score(w, b, ~train))
            held_labels.append(y[~train])
        grid.append({"l2": float(l2), "held_out_group_auc": auc(np.concatenate(held_scores),
                                                               np.concatenate(held_labels))})
    best = max(grid, key=lambda g: np.nan_to_num(g["held_out_group_auc"]))
    w, b = fit_logistic_max(x, y, w0, b0, best["l2"])
    return {"weight": w, "bias": b, "l2": best["l2"],
            "validation": {"trained_head_auc": base, "grid": grid, "groups": [str(g) for g in groups],
                           "episodes": int(len(y)), "successes": int(y.sum())},
            "train_auc": auc(score(w, b, np.ones(len(y), bool)), y)}


def write_tuned_head(ckpt: str | Path, out: str | Path, weight: np.ndarray, bias: float) -> Path:
    """The model at `ckpt` with its success logit replaced by (weight, bias), as a new checkpoint dir `out`."""
    from flexwm.inference import load_run
    from flexwm.io import save_pretrained_dir
    from flexwm.runs import resolve_model_dir, resolve_run_dir

    ckpt_dir, run = resolve_model_dir(ckpt), resolve_run_dir(ckpt)
    out = Path(out)
    if out.resolve() in (run.resolve(), ckpt_dir.resolve()):
        raise ConfigError(f"--out {out} is the run itself; write the tuned head to a new directory")
    out.mkdir(parents=True, exist_ok=True)
    wm = load_run(ckpt)
    cfg = _copy_run_files(run, ckpt_dir, out)
    save_pretrained_dir(out, wm.weights_with_success_logit(weight, bias), cfg)
    return out


def _copy_run_files(run: Path, ckpt: Path, out: Path) -> dict[str, Any]:
    cfg = json.loads((ckpt / "config.json").read_text())
    for name in ("text_cache.safetensors", "split.json"):
        if (run / name).exists():
            shutil.copy2(run / name, out / name)
    if not cfg.get("tokenizer_path"):
        if not (run / "tokenizer").exists():
            raise ConfigError(f"{run} has no tokenizer/ and its config names no tokenizer_path")
        if (out / "tokenizer").exists():
            shutil.rmtree(out / "tokenizer")
        shutil.copytree(run / "tokenizer", out / "tokenizer")
    return cfg


def tune_success_head(ckpt: str | Path, out: str | Path, episodes: Sequence[Any], *, flow_steps: int = 4,
                      ac_noise: str = "sample", horizon: int | None = None, batch: int = 32, seed: int = 0,
                      progress: bool = False, command: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Imagine `episodes` with the run at `ckpt`, re-fit its success row, write the tuned checkpoint to `out`.

    The imagined features are kept in OUT/imagined_features.npz (written atomically) and reused by a rerun with
    the same settings, so an interrupted tuning only repeats the fit."""
    from flexwm.inference import load_run
    from flexwm.io import atomic_write, atomic_write_json, save_pretrained_dir
    from flexwm.runs import resolve_model_dir, resolve_run_dir

    ckpt_dir, run = resolve_model_dir(ckpt), resolve_run_dir(ckpt)
    out = Path(out)
    if out.resolve() in (run.resolve(), ckpt_dir.resolve()):
        raise ConfigError(f"--out {out} is the run itself; write the tuned head to a new directory")
    if not episodes:
        raise ConfigError("no episodes to imagine; give training episodes with successes and failures / play")
    out.mkdir(parents=True, exist_ok=True)
    wm = load_run(ckpt, steps=flow_steps, ac_noise=ac_noise, device=device)
    settings = {"ckpt": str(ckpt_dir), "episodes": len(episodes), "flow_steps": flow_steps, "ac_noise": ac_noise,
                "horizon": horizon, "seed": seed,
                "episode_keys": [f"{e.meta.task}/{e.meta.outcome}/{e.meta.seed}" for e in episodes]}
    cache = out / "imagined_features.npz"
    data = None
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if json.loads(str(z["settings"])) == settings:
                data = {k: z[k] for k in ("features", "labels", "episode", "step", "old_prob")}
    t0 = time.perf_counter()
    if data is None:
        data = imagined_head_features(wm, episodes, horizon=horizon, batch=batch, seed=seed, progress=progress)
        def write(path: Path) -> None:
            with open(path, "wb") as f:
                np.savez(f, settings=json.dumps(settings), **data)

        atomic_write(cache, write)
    imagine_s = time.perf_counter() - t0
    w0, b0 = wm.success_logit()
    fit = fit_success_head(data, w0, b0, seed=seed)
    cfg = _copy_run_files(run, ckpt_dir, out)
    save_pretrained_dir(out, wm.weights_with_success_logit(fit["weight"], fit["bias"]), cfg)
    p_new = _sigmoid(data["features"] @ fit["weight"] + fit["bias"])
    y = data["labels"]
    report = {"source": str(ckpt_dir), "episodes": len(episodes), "windows": int(len(y)),
              "positive_windows": int(y.sum()), "flow_steps": flow_steps, "ac_noise": ac_noise, "seed": seed,
              "l2": fit["l2"], "validation": fit["validation"],
              "train_fit": {"trained_head_episode_auc": episode_auc(data["old_prob"], y, data["episode"]),
                            "refit_episode_auc": episode_auc(p_new, y, data["episode"])},
              "outcomes": {o: int(sum(e.meta.outcome == o for e in episodes)) for o in ("success", "failure", "play")},
              "imagine_s": imagine_s, "command": command}
    atomic_write_json(out / "head_tuning.json", report)
    return report


def tune_head_run(ckpt: str | Path, out: str | Path, *, data: str | Path | None = None, max_episodes: int = 384,
                  horizon: int | None = None, flow_steps: int = 4, ac_noise: str = "sample", seed: int = 0,
                  device: str = "cpu", progress: bool = False, command: list[str] | None = None) -> dict[str, Any]:
    """`flexwm tune-head`: up to `max_episodes` training episodes of the run's `data` (default: its first
    dataset; never its held-out ones), shared round-robin by outcome (balanced where possible, order drawn with
    `seed`), imagined and used to re-fit the success head into a new checkpoint `out` (`tune_success_head`)."""
    from flexwm.config import check_device
    from flexwm.data import FlexDataset
    from flexwm.runs import run_heldout

    check_device(device)
    data, held = run_heldout(ckpt, data, "tune-head")
    ds = FlexDataset(data)
    held_set = set(held)
    by_outcome: dict[str, list[int]] = {}
    for i in range(len(ds)):
        if i not in held_set and ds.episodes[i]["outcome"] != "unlabelled":  # unknown outcome: no label
            by_outcome.setdefault(ds.episodes[i]["outcome"], []).append(i)
    rng = np.random.default_rng(seed)
    pools = {o: list(rng.permutation(v)) for o, v in sorted(by_outcome.items())}
    idx: list[int] = []
    while len(idx) < max_episodes and any(pools.values()):  # round-robin over outcomes: balanced where possible
        for pool in pools.values():
            if pool and len(idx) < max_episodes:
                idx.append(int(pool.pop()))
    return tune_success_head(ckpt, out, [ds.load_episode(i) for i in sorted(idx)], flow_steps=flow_steps,
                             ac_noise=ac_noise, horizon=horizon, seed=seed, progress=progress, device=device,
                             command=" ".join(command or []))
