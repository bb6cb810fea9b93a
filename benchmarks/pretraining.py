"""Video pretraining vs training from scratch when action labels are scarce: assemble the results file.

The experiment (`bash benchmarks/pretraining.sh` runs it end to end):
  1. pretrain: the flexible model's video mode only (`model.mode_weights` = video 1, everything else 0;
     `model.proprio_drop=1`), so the trunk learns from frames and instructions and never sees an action or a
     proprioceptive state;
  2. fine-tune the pretrained weights (`init_from`) on a few action-labelled demonstrations per task with the
     default flexible mode weights;
  3. train the same model from scratch on the same demonstrations with the same fine-tuning steps;
  4. `flexwm eval --policy wam` both on the same tasks, reset seeds and held-out instructions.

    python benchmarks/pretraining.py --eval video-pretrained=runs/pre/eval-pretrained.json \\
        --eval scratch=runs/pre/eval-scratch.json --pretrain-run runs/pre/video-3k \\
        --finetune-run video-pretrained=runs/pre/ft-pretrained-2k --finetune-run scratch=runs/pre/ft-scratch-2k \\
        --out benchmarks/results/pretraining_cpu.json

Writes {"rows": [{"init", "env", "task", "demos_per_task", "episodes", "successes", "mean_max_coverage"}, ...],
"pooled": {init: {"episodes", "successes", "rate", "ci95"}}, "compute": {...}, "command", "commit", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from flexwm.evaluation.stats import wilson_interval  # noqa: E402

INITS = ("video-pretrained", "scratch")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in INITS:
            raise SystemExit(f"{what} wants INIT=PATH with INIT one of {list(INITS)}, got {item!r}")
        out[name] = value
    return out


def _run_info(run: str | Path) -> dict[str, Any]:
    """Steps, batch, samples and the episode filter of a training run (from its run_config.json)."""
    cfg = json.loads((Path(run) / "run_config.json").read_text())
    steps, batch = int(cfg["train"]["steps"]), int(cfg["train"]["batch_size"])
    modes = {k: v for k, v in cfg["model"]["mode_weights"].items() if v > 0}
    return {"run": str(run), "steps": steps, "batch_size": batch, "samples": steps * batch, "modes": modes,
            "train_episodes": cfg.get("train_episodes"), "init_from": cfg.get("init_from")}


def demos_per_task(run: dict[str, Any]) -> int | None:
    filt = run.get("train_episodes") or {}
    return filt.get("per_task")


def rows_of(init: str, result: dict[str, Any], demos: int | None) -> list[dict[str, Any]]:
    rows = []
    for task, r in result["per_task"].items():
        cov = [e["max_coverage"] for e in r.get("per_episode", []) if e.get("max_coverage") is not None]
        rows.append({"init": init, "env": r["env"], "task": task, "demos_per_task": demos,
                     "episodes": int(r["summary"]["episodes"]), "successes": int(r["summary"]["successes"]),
                     "mean_max_coverage": sum(cov) / len(cov) if cov else None, "seed": r["seed"]})
    return rows


def assemble(evals: dict[str, str], pretrain_run: str | None, finetune_runs: dict[str, str]) -> dict[str, Any]:
    results = {k: json.loads(Path(v).read_text()) for k, v in evals.items()}
    runs = {k: _run_info(v) for k, v in finetune_runs.items()}
    for init, r in results.items():
        if not r.get("complete", True):
            raise SystemExit(f"{evals[init]} is an unfinished evaluation; rerun its flexwm eval command")
    seeds = {init: {t: tuple(e["seed"] for e in p["per_episode"]) for t, p in r["per_task"].items()}
             for init, r in results.items()}
    first = next(iter(seeds.values()))
    if any(s != first for s in seeds.values()):
        raise SystemExit("the evaluations do not use the same tasks and reset seeds; the comparison must be paired")
    rows = [row for init, r in results.items() for row in rows_of(init, r, demos_per_task(runs.get(init, {})))]
    pooled = {}
    for init in results:
        n = sum(r["episodes"] for r in rows if r["init"] == init)
        k = sum(r["successes"] for r in rows if r["init"] == init)
        lo, hi = wilson_interval(k, n)
        pooled[init] = {"episodes": n, "successes": k, "rate": k / n if n else None, "ci95": [lo, hi]}
    compute: dict[str, Any] = {k: {"finetune": v} for k, v in runs.items()}
    if pretrain_run:
        pre = _run_info(pretrain_run)
        compute.setdefault("video-pretrained", {})["pretrain"] = pre
    out: dict[str, Any] = {"rows": rows, "pooled": pooled, "compute": compute,
                           "evaluations": {k: {"file": v, "command": results[k].get("command"),
                                               "flow_steps": results[k].get("flow_steps"),
                                               "policy": results[k].get("policy")} for k, v in evals.items()}}
    if {"video-pretrained", "scratch"} <= set(pooled):
        out.update(paired_difference(results["video-pretrained"], results["scratch"]))
    return out


def paired_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Success of `a` minus `b` on the same (task, reset seed) episodes, in points, with the 95% interval of a
    difference of paired proportions (Wald on the discordant pairs) and the discordant counts."""
    pairs = [(ea["success"], eb["success"]) for t in a["per_task"]
             for ea, eb in zip(a["per_task"][t]["per_episode"], b["per_task"][t]["per_episode"])]
    n = len(pairs)
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(y and not x for x, y in pairs)
    d = (only_a - only_b) / n
    se = (only_a + only_b - (only_a - only_b) ** 2 / n) ** 0.5 / n
    return {"difference_points": 100 * d, "difference_ci95_points": [100 * (d - 1.96 * se), 100 * (d + 1.96 * se)],
            "paired_episodes": n, "only_pretrained_succeeds": only_a, "only_scratch_succeeds": only_b}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", action="append", required=True, help="INIT=FILE (flexwm eval output); INIT is "
                    "video-pretrained or scratch")
    ap.add_argument("--pretrain-run", default=None, help="the video-pretraining run directory")
    ap.add_argument("--finetune-run", action="append", default=[], help="INIT=RUN (the fine-tuning run directory)")
    ap.add_argument("--setting", action="append", default=[], help="NAME=TEXT shown with the results (repeat)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = assemble(_pairs(args.eval, "--eval"), args.pretrain_run, _pairs(args.finetune_run, "--finetune-run"))
    out["settings"] = dict(s.partition("=")[::2] for s in args.setting)
    from common import machine

    out["commit"] = machine().get("git_commit")
    path = write_result(args.out, out)
    for init, p in out["pooled"].items():
        print(f"{init:18s} {p['successes']}/{p['episodes']} = {100 * p['rate']:.1f}%  "
              f"CI95 [{100 * p['ci95'][0]:.0f}%, {100 * p['ci95'][1]:.0f}%]")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
