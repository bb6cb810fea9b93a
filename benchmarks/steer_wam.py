"""Latent-space RL over the WAM's initial noise (flexwm.rl.noise_rl): real success before and after.

    python benchmarks/steer_wam.py --run runs/cpu-nr-flex-ac3-ih --tasks button-press-v3,handle-press-v3,door-open-v3 \
        --episodes 50 --backends imagination --out benchmarks/results/steer_wam_cpu.json

For each task: the WAM with an untrained noise policy (mu = 0, std --set eval_std: exactly the WAM without
proprioception) is evaluated on the real simulator (--episodes episodes, reset seeds from --seed, held-out
instructions, Wilson 95% intervals); a noise policy is trained by RL in imagination (and/or, with the same
budget, in the real simulator: --backends imagination,real) and evaluated the same way. Every stage's output is
kept next to --out and reused on a rerun, so several processes may work on different --tasks with the same --out
folder and a last run over all tasks only aggregates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
from common import write_result  # noqa: E402


def evaluate(wm, pol, std: float, task: str, episodes: int, seed: int, path: Path) -> dict:
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.io import atomic_write_json
    from flexwm.planning.steered import steered_wam_policy

    if path.exists():
        return json.loads(path.read_text())
    r = evaluate_policy(steered_wam_policy(wm, pol, std), "metaworld", task, episodes, seed=seed)
    res = {"task": task, "summary": r["summary"], "success": r["success"], "latency": r["latency"]}
    atomic_write_json(path, res)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="world-model run: its WAM is steered, its AC mode imagines")
    p.add_argument("--tasks", default="button-press-v3,handle-press-v3,door-open-v3")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--backends", default="imagination", help="comma-separated: imagination, real")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="NoiseRLConfig override k=v")
    p.add_argument("--out", default="benchmarks/results/steer_wam.json")
    args = p.parse_args()

    from flexwm.config import apply_overrides, to_dict
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json
    from flexwm.planning.steered import NoisePolicy, make_noise_policy
    from flexwm.rl.noise_rl import NoiseRLConfig, steer_wam

    tasks, backends = args.tasks.split(","), args.backends.split(",")
    folder = Path(str(Path(args.out).with_suffix("")))
    folder.mkdir(parents=True, exist_ok=True)
    cfg = apply_overrides(NoiseRLConfig(), args.overrides) if args.overrides else NoiseRLConfig()
    wm = load_run(args.run, steps=args.flow_steps)
    torch.manual_seed(0)
    rows = {}
    for t in tasks:
        base = make_noise_policy(wm, cfg.hidden)
        row = {"before": evaluate(wm, base, cfg.eval_std, t, args.episodes, args.seed, folder / f"{t}-before.json")}
        for backend in backends:
            d = folder / f"{t}-{backend}"
            if not (d / "model.safetensors").exists():
                pol, log = steer_wam(wm, t, cfg, imagine=backend == "imagination", policy=base, progress=True)
                pol.save_pretrained(d, {"log": log, "run": args.run})
            log = json.loads((d / "config.json").read_text())["log"]
            pol = NoisePolicy.from_pretrained(d)
            row[backend] = {**evaluate(wm, pol, cfg.eval_std, t, args.episodes, args.seed,
                                       folder / f"{t}-{backend}.json"),
                            "train_wall_s": log["wall_s"], "train_native_steps": log["native_steps"],
                            "mean_return_per_iteration": [r["mean_return"] for r in log["iterations"]]}
        rows[t] = row
        print(t, {k: f"{v['summary']['rate']:.0%}" for k, v in row.items()}, flush=True)

    avg = {k: sum(r[k]["summary"]["rate"] for r in rows.values()) / len(rows) for k in ["before", *backends]}
    res = {"run": args.run, "tasks": tasks, "episodes_per_task": args.episodes, "seed": args.seed,
           "flow_steps": args.flow_steps, "config": to_dict(cfg), "per_task": rows, "average": avg,
           "gain_points": {b: 100 * (avg[b] - avg["before"]) for b in backends}}
    write_result(args.out, res)
    atomic_write_json(folder / "summary.json", res["average"])
    print(json.dumps(res["average"]), f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
