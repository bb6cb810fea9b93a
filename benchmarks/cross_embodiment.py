"""Cross-embodiment transfer: give a pretrained world model a new embodiment by fine-tuning only its adapters.

    python benchmarks/cross_embodiment.py --base runs/cpu-nr-flexible --demos 10 --steps 1500 --episodes 50 \
        --out benchmarks/results/cross_embodiment_cpu.json

1. --demos expert PushT demonstrations (reset seeds 0..demos-1), collected once into --data
2. adapters: the --base model (trained on Meta-World only) gets a new `pusht` embodiment adapter (its token,
   action / proprio encoders and action decoder: ~0.2M of the ~4M parameters); only the adapter is trained,
   on those demonstrations, for --steps steps (`init_from` + `finetune=adapters`)
3. scratch: the same model size trained from scratch on the same demonstrations for the same steps
4. both act with the WAM policy on the real PushT simulator, --episodes episodes (reset seeds from --seed,
   never used for the demonstrations): success (> 95% of the target covered) with Wilson 95% intervals and the
   mean maximum coverage, PushT's graded score; uniform random actions from the same reset seeds for reference.

Both runs use the frame tokenizer of --base (trained on Meta-World frames), so the comparison isolates what the
pretrained transformer brings. Every stage's output is kept next to --out and reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def run(cmd: list, log: Path) -> None:
    cmd = [str(c) for c in cmd]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "MUJOCO_GL": "egl"})
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {r.returncode}); see {log}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="a world-model run trained without PushT")
    p.add_argument("--data", default="data/pusht10", help="PushT demonstrations (collected here if missing)")
    p.add_argument("--demos", type=int, default=10)
    p.add_argument("--steps", type=int, default=1500, help="training steps of each run")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--policy", default="wam")
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--out", default="benchmarks/results/cross_embodiment.json")
    args = p.parse_args()
    if args.seed < args.demos:
        raise SystemExit(f"--seed {args.seed} would evaluate on the demonstrations' reset seeds 0..{args.demos - 1}")
    base_cfg = json.loads((Path(args.base) / "run_config.json").read_text())
    tokenizer = base_cfg.get("tokenizer_path") or str(Path(args.base) / "tokenizer")
    folder = Path(str(Path(args.out).with_suffix("")))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "cross_embodiment.log"
    flexwm = [sys.executable, "-m", "flexwm.cli"]

    data = Path(args.data)
    if not (data / "meta" / "info.json").exists():
        run([*flexwm, "collect", "--env", "pusht", "--tasks", "pusht", "--source", "expert", "--episodes",
             args.demos, "--seed", 0, "--out", data], log)
    info = json.loads(subprocess.run([*flexwm, "data", "info", str(data), "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    if info["episodes"] != args.demos:
        raise SystemExit(f"{data} holds {info['episodes']} episodes, not --demos {args.demos}; use another --data")

    runs = {"adapters": folder / "adapters", "scratch": folder / "scratch"}
    common = ["--data", data, "--preset", args.preset, "--steps", args.steps, "--set", "heldout_every=1000",
              "--set", f"tokenizer_path={tokenizer}"]
    extra = {"adapters": ["--set", f"init_from={args.base}", "--set", "finetune=adapters"], "scratch": []}
    rows = {}
    for name, rdir in runs.items():
        if not (rdir / "summary.json").exists():
            resume = ["--resume"] if (rdir / "checkpoints").exists() else []
            run([*flexwm, "train", *common, *extra[name], "--out", rdir, *resume], log)
        ev = folder / f"eval-{name}.json"
        if not (ev.exists() and json.loads(ev.read_text()).get("complete")):
            run([*flexwm, "eval", "--ckpt", rdir, "--env", "pusht", "--tasks", "pusht", "--policy", args.policy,
                 "--episodes", args.episodes, "--seed", args.seed, "--flow-steps", args.flow_steps,
                 "--instructions", "eval", "--out", ev, *(["--resume"] if ev.exists() else [])], log)
        r = json.loads(ev.read_text())
        task = r["per_task"]["pusht"]
        summary = json.loads((rdir / "summary.json").read_text())
        rows[name] = {"run": str(rdir), "success": task["summary"], "mean_max_coverage": task.get("mean_max_coverage"),
                      "max_coverage_ci95": task.get("max_coverage_ci95"), "latency_s": task["latency"]["mean_s"],
                      "train_wall_s": summary.get("wall_s"),
                      "final_losses": summary.get("final_losses_mean_last_10_logs")}
    # reference: uniform random actions, same seeds (any run loads: random ignores the model)
    ev = folder / "eval-random.json"
    if not (ev.exists() and json.loads(ev.read_text()).get("complete")):
        run([*flexwm, "eval", "--ckpt", runs["scratch"], "--env", "pusht", "--tasks", "pusht", "--policy", "random",
             "--episodes", args.episodes, "--seed", args.seed, "--instructions", "eval", "--out", ev,
             *(["--resume"] if ev.exists() else [])], log)
    task = json.loads(ev.read_text())["per_task"]["pusht"]
    rows["random"] = {"success": task["summary"], "mean_max_coverage": task.get("mean_max_coverage"),
                      "max_coverage_ci95": task.get("max_coverage_ci95")}
    write_result(args.out, {"base": args.base, "data": str(data), "demos": args.demos, "steps": args.steps,
                            "episodes": args.episodes, "seed": args.seed, "policy": args.policy,
                            "flow_steps": args.flow_steps, "tokenizer": tokenizer, "rows": rows})
    for name, r in rows.items():
        s = r["success"]
        print(f"{name:9s} success {s['successes']}/{s['episodes']} [{s['ci95'][0]:.0%}, {s['ci95'][1]:.0%}]  "
              f"mean max coverage {r['mean_max_coverage']:.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
