"""Collect the `flexwm eval` results of settings tried on one model into one file for the results pages.

    python benchmarks/recipe_sweep.py --eval "execute 4=runs/sweep/exec4.json" --eval "execute 8=..." \\
        --note "11 AVDC tasks x 10 episodes, reset seeds 10000-10009" --out benchmarks/results/recipe_sweep_cpu.json

Each --eval is NAME=FILE with FILE a complete `flexwm eval --out FILE` result (several FILEs for one NAME are
joined with '+', e.g. the two halves of the tasks). Every result must use the same reset seeds per task (checked).
The setting of each (policy overrides, flow steps, instruction guidance) is read from the result itself.
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


def merged(paths: list[str]) -> dict[str, Any]:
    parts = [json.loads(Path(p).read_text()) for p in paths]
    for p, d in zip(paths, parts, strict=True):
        if not d.get("complete"):
            raise SystemExit(f"{p} is not a complete evaluation; finish it with `flexwm eval --resume`")
    out = {k: v for k, v in parts[0].items() if k not in ("per_task", "tasks", "command")}
    out["per_task"] = {t: r for d in parts for t, r in d["per_task"].items()}
    out["tasks"] = list(out["per_task"])
    out["command"] = " ; ".join(d.get("command", "") for d in parts)
    first = next(iter(out["per_task"].values()))
    setting = [f"execute {first.get('execute')}", f"{out.get('flow_steps')} flow steps"]
    overrides = {k: v for k, v in (out.get("policy_overrides") or {}).items() if k != "execute"}
    setting += [f"{k} {v}" for k, v in overrides.items()]
    if out.get("cfg_scale", 1.0) != 1.0:
        setting.append(f"instruction guidance {out['cfg_scale']}")
    out["setting"] = ", ".join(setting)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", action="append", required=True, help="NAME=FILE[+FILE...] (repeat)")
    ap.add_argument("--note", required=True, help="what the sweep was, for the results page")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    seeds: dict[str, list[int]] = {}
    for item in args.eval:
        name, sep, files = item.partition("=")
        if not sep:
            raise SystemExit(f"--eval {item!r}: expected NAME=FILE")
        r = merged(files.split("+"))
        for task, t in r["per_task"].items():
            got = [int(e["seed"]) for e in t["per_episode"]]
            if seeds.setdefault(task, got) != got:
                raise SystemExit(f"{name} used other reset seeds on {task}; every setting must use the same")
        results[name] = r
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    write_result(args.out, {"note": args.note, "results": results, "commit": commit})


if __name__ == "__main__":
    main()
