"""Acting on the real simulator: success and decision latency of every (checkpoint, policy) pair, one JSON.

    python benchmarks/act.py --runs flexible=runs/cpu-nr-flexible wam-only=runs/cpu-nr-wam-only \
        ac-only=runs/cpu-nr-ac-only --bc runs/cpu-bc --pairs flexible:wam,best-of-n,cem,hybrid \
        wam-only:wam ac-only:cem --episodes 5 --out benchmarks/results/act_cpu.json

Each pair is one `flexwm eval` (held-out instructions, reset seeds from --seed) writing its own result file
next to --out (`<out stem>/<run>-<policy>.json`); reruns resume those files, so an interrupted benchmark
continues where it stopped. `--jobs 2` runs two evaluations at once with one thread each. The summary
holds per pair the average over tasks, the pooled success with a Wilson 95% interval, per-task rates and the
mean / p95 latency of a decision (one plan of an action chunk). `random` and `bc` (if --bc) are always added.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def eval_command(ckpt: str, policy: str, out: Path, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "flexwm.cli", "eval", "--ckpt", ckpt, "--policy", policy, "--tasks", args.tasks,
           "--episodes", str(args.episodes), "--seed", str(args.seed), "--flow-steps", str(args.flow_steps),
           "--ac-noise", args.ac_noise, "--ac-guidance", str(args.ac_guidance), "--budget", args.budget,
           "--instructions", args.instructions, "--out", str(out)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.videos:
        cmd += ["--videos", str(args.videos)]
    for item in args.policy_set:
        pol, _, kv = item.partition(":")
        if pol == policy:
            cmd += ["--set", kv]
    if out.exists():
        cmd.append("--resume")
    return cmd


def run_pair(name: str, ckpt: str, policy: str, out: Path, args: argparse.Namespace) -> dict:
    if out.exists() and json.loads(out.read_text()).get("complete"):
        print(f"[act] {name}/{policy}: done before ({out})", flush=True)
    else:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        start = time.perf_counter()
        print(f"[act] {name}/{policy}: running", flush=True)
        r = subprocess.run(eval_command(ckpt, policy, out, args), env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"[act] {name}/{policy} failed:\n{r.stderr[-3000:]}")
        print(f"[act] {name}/{policy}: {time.perf_counter() - start:.0f} s", flush=True)
    res = json.loads(out.read_text())
    lat = [t["latency"] for t in res["per_task"].values() if t["latency"]["mean_s"] is not None]
    n = sum(t["decisions"] for t in lat) or 1
    return {"model": name, "policy": policy, "ckpt": ckpt, "result_file": str(out),
            "average_over_tasks": res["average_over_tasks"], "pooled": res["pooled"],
            "per_task": {k: v["summary"]["rate"] for k, v in res["per_task"].items()},
            "latency_mean_s": sum(t["mean_s"] * t["decisions"] for t in lat) / n,
            "latency_p95_s_max_over_tasks": max((t["p95_s"] for t in lat), default=None),
            "instructions_seen_in_training": sorted({e["instruction_seen_in_training"] is True
                                                     for v in res["per_task"].values()
                                                     for e in v["per_episode"]})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR (the first is used for random)")
    p.add_argument("--pairs", nargs="+", required=True, help="NAME:policy,policy,... per run")
    p.add_argument("--bc", default=None, help="a flexwm train-bc directory: adds the bc baseline")
    p.add_argument("--tasks", default="avdc")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--ac-noise", default="sample", choices=("sample", "zero"))
    p.add_argument("--ac-guidance", type=float, default=1.0, help="> 1: AC rollouts follow the actions more")
    p.add_argument("--budget", default="auto", choices=("auto", "default", "cpu", "tiny"),
                   help="planning budget preset of flexwm eval (auto: cpu on a CPU)")
    p.add_argument("--instructions", default="eval", choices=("eval", "train", "canonical"))
    p.add_argument("--videos", type=int, default=0)
    p.add_argument("--set", dest="policy_set", action="append", default=[],
                   help="POLICY:key=value, a policy config override (repeatable), e.g. cem:population=16")
    p.add_argument("--jobs", type=int, default=1, help="evaluations at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads per evaluation (default 2 / jobs)")
    p.add_argument("--out", default="benchmarks/results/act.json")
    args = p.parse_args()
    args.threads = args.threads or max(1, (os.cpu_count() or 2) // args.jobs)

    runs = dict(spec.split("=", 1) for spec in args.runs)
    todo: list[tuple[str, str, str]] = []
    for spec in args.pairs:
        name, _, policies = spec.partition(":")
        if name not in runs:
            raise SystemExit(f"--pairs names run {name!r}, which is not in --runs ({sorted(runs)})")
        todo += [(name, runs[name], pol) for pol in policies.split(",") if pol]
    first = next(iter(runs))
    todo.append((first, runs[first], "random"))
    if args.bc:
        todo.append(("bc", args.bc, "bc"))
    folder = Path(str(Path(args.out).with_suffix("")))
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(n, c, pol, folder / f"{n}-{pol}.json") for n, c, pol in todo]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda j: run_pair(*j, args), jobs))
    setup = {k: getattr(args, k) for k in ("tasks", "episodes", "seed", "max_steps", "flow_steps", "ac_noise",
                                           "ac_guidance", "budget", "instructions", "jobs", "threads", "policy_set")}
    write_result(args.out, {"setup": setup, "runs": runs, "rows": rows})
    print(f"{'model':10s} {'policy':10s} {'avg':>6s} {'pooled (95% CI)':>22s} {'s/decision':>10s}")
    for r in rows:
        ci = r["pooled"]["ci95"]
        print(f"{r['model']:10s} {r['policy']:10s} {r['average_over_tasks']:6.1%} "
              f"{r['pooled']['successes']:4d}/{r['pooled']['episodes']:<4d} [{ci[0]:.0%}, {ci[1]:.0%}]"
              f" {r['latency_mean_s']:10.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
