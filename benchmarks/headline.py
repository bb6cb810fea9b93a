"""The headline results file: per model, way to act and task, real-simulator successes; each model's compute;
the action-conditioned error table beside it.

    python benchmarks/headline.py \
        --eval flexible:wam=runs/eval/flexible-wam.json --eval wam-only:wam=runs/eval/wam-only-wam.json \
        --eval bc:bc=runs/eval/bc.json --eval random:random=runs/eval/random.json \
        --compute benchmarks/results/compute_cpu.json --ac-error benchmarks/results/ac_error.json \
        --out benchmarks/results/headline_cpu.json

Each --eval is MODEL:POLICY=FILE, FILE a complete `flexwm eval --out FILE` result. Every evaluation must use the
same reset seeds and episodes per task (checked), so the rows are paired. The output has the schema that
docs/gen.py renders: {"rows": [{"model", "policy", "env", "task", "episodes", "successes",
"seconds_per_decision"}], "compute": {model: {"samples", "flops"}}, "ac_error": ..., "command", "commit"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def rows_of(model: str, policy: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    if not result.get("complete"):
        raise SystemExit(f"the evaluation of {model}:{policy} is not complete; finish it with `flexwm eval --resume`")
    rows = []
    for task, r in result["per_task"].items():
        rows.append({"model": model, "policy": policy, "env": r.get("env", result.get("env")), "task": task,
                     "episodes": int(r["summary"]["episodes"]), "successes": int(r["summary"]["successes"]),
                     "seconds_per_decision": r.get("latency", {}).get("mean_s"),
                     "seeds": [int(e["seed"]) for e in r.get("per_episode", [])]})
    return rows


def check_paired(rows: list[dict[str, Any]]) -> None:
    """Every (model, policy) saw the same reset seeds on every task."""
    seeds: dict[str, list[int]] = {}
    for r in rows:
        first = seeds.setdefault(r["task"], r["seeds"])
        if r["seeds"] != first:
            raise SystemExit(f"{r['model']}:{r['policy']} on {r['task']} used reset seeds {r['seeds'][:3]}..., "
                             f"another evaluation {first[:3]}...; rerun with the same --seed and --episodes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", action="append", required=True, help="MODEL:POLICY=FILE (repeat)")
    ap.add_argument("--compute", default=None, help="benchmarks/compute.py output")
    ap.add_argument("--ac-error", default=None, help="benchmarks/train.py ac-error output")
    ap.add_argument("--setting", action="append", default=[],
                    help="KEY=TEXT shown under the per-task table (how the models were trained and evaluated)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for item in args.eval:
        key, sep, path = item.partition("=")
        model, _, policy = key.partition(":")
        if not sep or not model or not policy:
            raise SystemExit(f"--eval {item!r}: expected MODEL:POLICY=FILE")
        rows += rows_of(model, policy, json.loads(Path(path).read_text()))
    check_paired(rows)
    out: dict[str, Any] = {"rows": rows, "compute": {}, "sources": args.eval,
                           "settings": dict(item.partition("=")[::2] for item in args.setting)}
    if args.compute:
        out["compute"] = {k: {"samples": v["samples"], "flops": v["flops"]}
                          for k, v in json.loads(Path(args.compute).read_text())["compute"].items()}
    if args.ac_error:
        out["ac_error"] = json.loads(Path(args.ac_error).read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    write_result(args.out, {**out, "commit": commit})


if __name__ == "__main__":
    main()
