"""Does a run's success head tell real successes from real failures? Scores each held-out success/failure
episode's first frame + its last model chunk of real frames (encoded, not imagined) under the episode's own
instruction, and reports the mean P(success) per outcome. Separating here but not in closed-loop policy
evaluation points at the imagined futures, not at the head.

    python benchmarks/score_probe.py --runs flexible=runs/cpu-nr-flexible ac-only=runs/cpu-nr-ac-only \
        --data data/avdc --out benchmarks/results/score_probe_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def probe(run: str, data: str, max_episodes: int) -> dict:
    from flexwm.data import FlexDataset
    from flexwm.inference import load_run
    from flexwm.runs import run_heldout

    ds = FlexDataset(data)
    held = run_heldout(run, data, "benchmarks/score_probe.py")[1][:max_episodes]
    wm = load_run(run, steps=4)
    F, S = wm.horizon // wm.frame_stride, wm.frame_stride
    out: dict[str, list[float]] = {}
    for i in held:
        e = ds.episodes[i]
        if e["outcome"] not in ("success", "failure"):
            continue
        ep = ds.load_episode(i)
        idx = [ep.length - 1 - S * (F - 1 - k) for k in range(F)]
        with torch.no_grad():
            state = wm.encode(ep.frames[None, :1])
            future = torch.cat([wm.encode(ep.frames[j][None]).context[:, -1:] for j in idx], 1)
            p, _ = wm.score(state, future, e["instruction"])
        out.setdefault(e["outcome"], []).append(float(p[0]))
    return {k: {"episodes": len(v), "mean_p_success": float(np.mean(v))} for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR")
    p.add_argument("--data", required=True)
    p.add_argument("--max-episodes", type=int, default=120, help="held-out episodes looked at (first N)")
    p.add_argument("--out", default="benchmarks/results/score_probe.json")
    args = p.parse_args()
    res = {name: probe(path, args.data, args.max_episodes) for name, path in (s.split("=", 1) for s in args.runs)}
    write_result(args.out, {"data": args.data, "runs": res})
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
