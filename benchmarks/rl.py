"""RL in imagination vs in the real simulator: improve a weak behaviour-cloning policy, measure real success.

    python benchmarks/rl.py --run runs/cpu-nr-flexible --data data/avdc \
        --tasks button-press-topdown-v3,handle-press-v3,faucet-open-v3 --demos 5 --episodes 50 \
        --out benchmarks/results/rl_cpu.json

1. weak policy: flexwm's BC (images + instruction, no proprioception) on the first --demos successes of each
   task (one multi-task model for all --tasks)
2. for each task: improve it with flexwm.rl.improve in the world model (imagination), and with the same
   algorithm and the same number of rollouts in the real simulator
3. real-simulator success of before / after-imagination / after-real, --episodes episodes per task (reset
   seeds from --seed, held-out instructions), with Wilson 95% intervals; training wall time and native
   steps of each. Every stage's output is kept next to --out and reused on a rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
from common import write_result  # noqa: E402


def evaluate(model_dir: Path, task: str, episodes: int, seed: int, path: Path) -> dict:
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.io import atomic_write_json
    from flexwm.planning import BCModel, make_policy

    if path.exists():
        return json.loads(path.read_text())
    policy = make_policy("bc", bc_model=BCModel.from_pretrained(model_dir))
    r = evaluate_policy(policy, "metaworld", task, episodes, seed=seed)
    r.pop("videos", None)
    res = {"task": task, "model": str(model_dir), "summary": r["summary"], "success": r["success"]}
    atomic_write_json(path, res)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="world-model run (imagination)")
    p.add_argument("--data", required=True, help="dataset with the demonstrations")
    p.add_argument("--tasks", default="button-press-topdown-v3,handle-press-v3,faucet-open-v3")
    p.add_argument("--demos", type=int, default=5, help="success episodes per task for the weak BC")
    p.add_argument("--bc-steps", type=int, default=1500)
    p.add_argument("--bc-preset", default="cpu")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="ImproveConfig override k=v")
    p.add_argument("--out", default="benchmarks/results/rl.json")
    args = p.parse_args()

    from flexwm.config import apply_overrides, to_dict
    from flexwm.data import FlexDataset
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json
    from flexwm.planning import BCModel
    from flexwm.planning.bc import train_bc
    from flexwm.rl.improve import ImproveConfig, improve_bc

    tasks = args.tasks.split(",")
    folder = Path(str(Path(args.out).with_suffix("")))
    folder.mkdir(parents=True, exist_ok=True)
    cfg = apply_overrides(ImproveConfig(), args.overrides) if args.overrides else ImproveConfig()
    # the real-simulator comparison runs whole episodes from resets with the same budget knobs
    real_cfg = dataclasses.replace(cfg, start="reset", reward="success")

    bc_dir = folder / "bc"
    if not (bc_dir / "model.safetensors").exists():
        ds = FlexDataset(args.data)
        idx = []
        for t in tasks:
            idx += [i for i, e in enumerate(ds.episodes) if e["env_task"] == t and e["outcome"] == "success"][
                :args.demos]
        start = time.perf_counter()
        bc, info = train_bc(ds, args.bc_preset, episodes=idx, steps=args.bc_steps, batch_size=32, use_proprio=False,
                            progress=True)
        bc.save_pretrained(bc_dir)
        atomic_write_json(bc_dir / "train_info.json", {"episodes": idx, "steps": args.bc_steps,
                                                       "wall_s": time.perf_counter() - start,
                                                       "loss_last": info["losses"][-1]})
    bc = BCModel.from_pretrained(bc_dir)
    wm = load_run(args.run, steps=args.flow_steps)
    branch_data, heldout = None, set()
    if cfg.start == "dataset":  # short imagined branches from the task's training frames (never held-out ones)
        from flexwm.runs import run_heldout

        branch_data = FlexDataset(args.data)
        heldout = set(run_heldout(args.run, args.data, "benchmarks/rl.py")[1])
    rows = {}
    for t in tasks:
        row = {"before": evaluate(bc_dir, t, args.episodes, args.seed, folder / f"{t}-before.json")}
        for backend in ("imagination", "real"):
            d = folder / f"{t}-{backend}"
            if not (d / "model.safetensors").exists():
                torch.manual_seed(0)
                kw = {}
                if backend == "imagination" and branch_data is not None:
                    kw = {"dataset": branch_data, "episodes": [i for i, e in enumerate(branch_data.episodes)
                                                               if e["env_task"] == t and i not in heldout]}
                model, log = improve_bc(bc, t, cfg if backend == "imagination" else real_cfg,
                                        wm=wm if backend == "imagination" else None, progress=True, **kw)
                model.save_pretrained(d)
                atomic_write_json(d / "improve_log.json", log)
            log = json.loads((d / "improve_log.json").read_text())
            row[backend] = {**evaluate(d, t, args.episodes, args.seed, folder / f"{t}-{backend}.json"),
                            "train_wall_s": log["wall_s"], "train_native_steps": log["native_steps"],
                            "mean_return_per_iteration": [r["mean_return"] for r in log["iterations"]]}
        rows[t] = row
        print(f"{t:28s} before {row['before']['summary']['rate']:.0%}  imagination "
              f"{row['imagination']['summary']['rate']:.0%}  real {row['real']['summary']['rate']:.0%}", flush=True)

    def avg(key: str) -> float:
        return sum(r[key]["summary"]["rate"] for r in rows.values()) / len(rows)

    res = {"run": args.run, "data": args.data, "tasks": tasks, "demos_per_task": args.demos,
           "episodes_per_task": args.episodes, "seed": args.seed, "improve_config": to_dict(cfg), "per_task": rows,
           "average": {k: avg(k) for k in ("before", "imagination", "real")}}
    res["gain_imagination_points"] = 100 * (res["average"]["imagination"] - res["average"]["before"])
    res["gain_real_points"] = 100 * (res["average"]["real"] - res["average"]["before"])
    write_result(args.out, res)
    print(json.dumps(res["average"]), f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
