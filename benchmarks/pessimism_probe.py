"""Does pessimism over imagination samples separate real outcomes better than one sample?

    python benchmarks/pessimism_probe.py --run runs/cpu-nr-flex-ac3 --samples 4 \
        --out benchmarks/results/pessimism_probe_flex-ac3.json

The run's held-out episodes are replayed open-loop in imagination `--samples` times with different noise seeds
(flexwm.evaluation.calibrate.imagined_scores). Each episode then has K imagined max-P(success) scores; the ROC AUC
against the real outcomes is reported for one sample, the mean, the minimum (pessimistic) and mean - std of the
K, and the best balanced accuracy of each. An imagined success that appears under some noise draws only is a
hallucination more often than one that appears under all of them, if the minimum separates better.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
from common import write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--max-episodes", type=int, default=128)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from flexwm.data import FlexDataset
    from flexwm.evaluation.calibrate import auc, best_threshold, imagined_scores
    from flexwm.inference import load_run
    from flexwm.runs import run_heldout

    data, held = run_heldout(args.run, None, "benchmarks/pessimism_probe.py")
    ds = FlexDataset(data)
    idx = held[: args.max_episodes]
    episodes = [ds.load_episode(i) for i in idx]
    labels = np.array([bool(np.asarray(e.success).any()) for e in episodes])
    wm = load_run(args.run, steps=args.flow_steps)
    t0 = time.perf_counter()
    scores = np.stack([imagined_scores(wm, episodes, seed=1000 * k) for k in range(args.samples)])  # (K, N)
    wall = time.perf_counter() - t0
    variants = {"one sample": scores[0], "mean": scores.mean(0), "min (pessimistic)": scores.min(0),
                "mean - std": scores.mean(0) - scores.std(0), "max (optimistic)": scores.max(0)}
    rows = {}
    for name, s in variants.items():
        thr, bacc = best_threshold(s, labels)
        rows[name] = {"auc": auc(s, labels), "threshold": thr, "balanced_accuracy": bacc,
                      "mean_score_success": float(s[labels].mean()), "mean_score_failure": float(s[~labels].mean())}
        print(f"{name:18s} AUC {rows[name]['auc']:.3f}  balanced acc {bacc:.3f} at {thr:.3f}", flush=True)
    write_result(args.out, {"run": args.run, "samples": args.samples, "flow_steps": args.flow_steps,
                            "episodes": len(episodes), "n_success": int(labels.sum()),
                            "n_failure": int((~labels).sum()), "episode_indices": idx, "variants": rows,
                            "wall_s": wall, "per_sample_scores": scores.tolist()})


if __name__ == "__main__":
    main()
