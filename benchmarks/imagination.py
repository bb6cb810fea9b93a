"""Imagination you can trust: policy evaluation in two world models on the same real episodes, and the one
results file `benchmarks/results/imagination_cpu.json`.

    # 1. run every policy of a suite in the real simulator once per task, and imagine the same episodes (same
    #    first frames; closed-loop image policies act on imagined frames) in each world model
    python benchmarks/imagination.py suite --suite benchmarks/suites/imagination.yaml \
        --model flexible=checkpoints/avdc11-cpu --model ac-only=runs/ac-only-4k \
        --task door-open-v3 --episodes 10 --seed 30000 --out benchmarks/results/imagination_cpu

    # 2. assemble: success rates per policy (averaged over the tasks), Pearson / Spearman / MMRV of imagined vs
    #    real per model, at the threshold 0.5 and at each model's calibrated threshold (`flexwm calibrate`, made
    #    on held-out dataset episodes, never on the suite); the speed and hybrid results beside them
    python benchmarks/imagination.py assemble --dir benchmarks/results/imagination_cpu \
        --calibration flexible=runs/eval/avdc11-cpu/imagined_calibration.json ... \
        --speed benchmarks/results/imagine_speed_avdc11.json --out benchmarks/results/imagination_cpu.json

`suite` writes one file per (task, policy), TASK/POLICY.json, as soon as that policy is done: an interrupted run
resumes where it stopped. Each holds the real per-episode outcomes and, per model, the imagined P(success)
after every imagined frame, so any threshold or aggregation rule is scored without re-running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
from common import write_result  # noqa: E402


def pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"{what} {item!r}: expected NAME=PATH")
        out[name] = value
    return out


# ---- suite ------------------------------------------------------------------------------------------------


def run_suite(args: argparse.Namespace) -> None:
    """Real episodes once per (task, policy), imagined in every --model. A record that exists but lacks a model
    gets it added: closed-loop policies need only the real first frames (a reset), scripted ones are re-run to
    replay their actions, and their real outcomes must match the saved ones (the simulator is deterministic).
    With --features, the success head's input of every imagined window of the first model is kept in
    TASK/POLICY.npz (for re-fitting the head: `fit-head`)."""
    from flexwm.envs import make_env
    from flexwm.evaluation.imagined_head import FeatureImagination
    from flexwm.evaluation.policy_eval import _imagine, _run_real, load_suite, make_suite_policy
    from flexwm.inference import load_run
    from flexwm.io import atomic_write, atomic_write_json

    models = pairs(args.model, "--model")
    first_model = next(iter(models))
    wms = {name: load_run(path, steps=args.flow_steps, prefer_embodiment="sawyer") for name, path in models.items()}
    acting = load_run(args.acting, steps=args.flow_steps, prefer_embodiment="sawyer") if args.acting \
        else wms[first_model]  # flexwm policies without a checkpoint act with this model
    specs = load_suite(args.suite)
    for task in args.task:
        env = make_env("metaworld", task, image_size=acting.image_size or (64, 64))
        stride = int(acting.frame_stride)
        frames = min(int(args.horizon or env.max_episode_steps), env.max_episode_steps) // stride
        steps, seeds = frames * stride, [args.seed + e for e in range(args.episodes)]
        for spec in specs:
            path = Path(args.out) / task / f"{spec.name}.json"
            record = json.loads(path.read_text()) if path.exists() else None
            todo = [m for m in wms if record is None or m not in record["imagined_prob"]]
            if not todo:
                print(f"{task} {spec.name}: done ({path})", flush=True)
                continue
            agent = make_suite_policy(spec, env, acting)
            open_loop = bool(getattr(agent, "needs_privileged_state", False))
            t0 = time.perf_counter()
            if record is None or open_loop:
                real = _run_real(env, agent, seeds, steps)
            else:
                real = {"first": [env.reset(s) for s in seeds], "success": record["real_success"]}
            if record is None:
                record = {"task": task, "policy": spec.name, "kind": spec.kind,
                          "spec": {k: v for k, v in vars(spec).items() if v is not None},
                          "imagination": "open-loop replay" if open_loop else "closed-loop", "seeds": seeds,
                          "horizon": steps, "frame_stride": stride, "flow_steps": args.flow_steps,
                          "real_success": [bool(x) for x in real["success"]],
                          "seconds": {"real": time.perf_counter() - t0}, "imagined_prob": {}}
            elif [bool(x) for x in real["success"]] != record["real_success"] or record["seeds"] != seeds:
                raise SystemExit(f"{path}: re-running {spec.name} gave other real outcomes than the saved ones; "
                                 "delete the file to start it over")
            for name in todo:
                t1 = time.perf_counter()
                make = lambda spec=spec, env=env: make_suite_policy(spec, env, acting)  # noqa: E731
                keep = args.features and name == first_model
                imag = _imagine(wms[name], env, make, real, seeds, frames, 0.5, open_loop,
                                imagination=FeatureImagination if keep else None)
                record["imagined_prob"][name] = np.round(imag["trace"], 4).tolist()
                record["seconds"][f"imagined_{name}"] = time.perf_counter() - t1
                if keep:
                    def write(f: Path, feats: np.ndarray = imag["features"],
                              real_success: np.ndarray = np.asarray(record["real_success"], bool)) -> None:
                        with open(f, "wb") as fh:
                            np.savez(fh, features=feats.astype(np.float32), real_success=real_success)

                    atomic_write(path.with_suffix(".npz"), write)
            atomic_write_json(path, record)
            print(f"{task} {spec.name}: real {np.mean(record['real_success']):.2f}, imagined@0.5 "
                  + ", ".join(f"{n} {np.mean(np.max(p, axis=1) > 0.5):.2f}" for n, p in record["imagined_prob"].items())
                  + f" ({sum(record['seconds'].values()):.0f} s)", flush=True)
        env.close() if hasattr(env, "close") else None


# ---- fit-head ---------------------------------------------------------------------------------------------


def fit_head(args: argparse.Namespace) -> None:
    """Re-fit the success row of --ckpt on the imagined rollouts (with real outcomes) of `suite --features`,
    validated leave-one-task-out; write the new checkpoint to --out with head_tuning.json beside it."""
    from flexwm.evaluation.imagined_head import fit_success_head_episodes, write_tuned_head
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json

    files = sorted(Path(args.dir).glob("*/*.npz"))
    if not files:
        raise SystemExit(f"no features under {args.dir}; run `suite --features` first")
    xs, ys, groups, sources = [], [], [], []
    for f in files:
        with np.load(f) as z:
            xs.append(z["features"])
            ys.append(z["real_success"])
        groups += [f.parent.name] * len(ys[-1])
        sources.append(f"{f.parent.name}/{f.stem}")
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(bool)
    w0, b0 = load_run(args.ckpt).success_logit()
    fit = fit_success_head_episodes(x, y, np.asarray(groups), np.asarray(w0, np.float64), float(b0))
    out = write_tuned_head(args.ckpt, args.out, fit["weight"], fit["bias"])
    report = {"source": args.ckpt, "rollouts": sources, "episodes": int(len(y)), "successes": int(y.sum()),
              "l2": fit["l2"], "validation": fit["validation"], "train_auc": fit["train_auc"],
              "command": " ".join([Path(sys.executable).name] + sys.argv)}
    atomic_write_json(out / "head_tuning.json", report)
    print(json.dumps({k: v for k, v in report.items() if k != "rollouts"}, indent=1))


# ---- assemble ---------------------------------------------------------------------------------------------


def load_records(directory: Path) -> list[dict[str, Any]]:
    recs = [json.loads(p.read_text()) for p in sorted(directory.glob("*/*.json"))]
    if not recs:
        raise SystemExit(f"no suite results under {directory}; run `benchmarks/imagination.py suite` first")
    return recs


RULES = {"max": lambda trace: np.max(trace, axis=1), "mean": lambda trace: np.mean(trace, axis=1)}


def episode_scores(rec: dict[str, Any], model: str, rule: str = "max") -> np.ndarray:
    """Each episode's imagined score: the max (as `flexwm evaluate-policies`) or mean P(success) over its frames."""
    return RULES[rule](np.asarray(rec["imagined_prob"][model]))


def choose_threshold(recs: list[dict[str, Any]], model: str, rule: str) -> dict[str, Any]:
    """The threshold with the best balanced accuracy of `rule` scores against real outcomes on `recs` (rollouts
    of other tasks and seeds than the suite's), and the episode AUC there."""
    from flexwm.evaluation.calibrate import auc, best_threshold

    recs = [r for r in recs if model in r["imagined_prob"]]
    s = np.concatenate([episode_scores(r, model, rule) for r in recs])
    y = np.concatenate([np.asarray(r["real_success"], bool) for r in recs])
    t, bacc = best_threshold(s, y)
    return {"threshold": t, "balanced_accuracy": bacc, "auc": auc(s, y), "episodes": int(len(y)),
            "tasks": sorted({r["task"] for r in recs}), "rule": rule}


def suite_stats(recs: list[dict[str, Any]], model: str, threshold: float, rule: str = "max") -> dict[str, Any]:
    """Per policy: real and imagined success averaged over tasks (every task weighs the same); the statistics
    across policies, and across (policy, task) cells as a finer check. An episode is imagined successful when
    its `rule` score (max or mean P(success) over the imagined frames) is above `threshold`."""
    from flexwm.evaluation.policy_eval import compare
    from flexwm.evaluation.stats import success_summary

    tasks = sorted({r["task"] for r in recs})
    from flexwm.evaluation.policy_eval import KINDS

    natural = lambda name: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]  # noqa: E731
    kind = {r["policy"]: r["kind"] for r in recs}
    names = sorted(kind, key=lambda n: (KINDS.index(kind[n]), natural(n)))  # scripted, random, bc, flexwm
    cell = {(r["task"], r["policy"]): r for r in recs}
    missing = [(t, n) for t in tasks for n in names if (t, n) not in cell]
    if missing:
        raise SystemExit(f"the suite is incomplete: {missing[:4]} ... have no results; finish `suite` first")
    policies, cells_real, cells_imag = [], [], []
    for n in names:
        real, imag, prob = [], [], []
        for t in tasks:
            r = cell[(t, n)]
            best = episode_scores(r, model, rule)
            real += r["real_success"]
            imag += list(best > threshold)
            prob += list(best)
            cells_real.append(float(np.mean(r["real_success"])))
            cells_imag.append(float(np.mean(best > threshold)))
        policies.append({"name": n, "kind": cell[(tasks[0], n)]["kind"],
                         "imagination": cell[(tasks[0], n)]["imagination"],
                         "real": success_summary(real), "imagined": success_summary(imag),
                         "imagined_mean_max_prob": float(np.mean(prob))})
    stats = compare([p["real"]["rate"] for p in policies], [p["imagined"]["rate"] for p in policies],
                    [p["imagined_mean_max_prob"] for p in policies])
    per_cell = compare(cells_real, cells_imag)
    episodes = {len(r["real_success"]) for r in recs}
    return {"model": model, "threshold": threshold, "rule": rule, "pearson": stats["pearson"],
            "spearman": stats["spearman"], "mmrv": stats["mmrv"], "pearson_prob": stats.get("pearson_prob"),
            "per_policy_task": {"pearson": per_cell["pearson"], "spearman": per_cell["spearman"],
                                "mmrv": per_cell["mmrv"], "cells": len(cells_real)},
            "policies": len(policies),
            "closed_loop_policies": sum(p["imagination"] == "closed-loop" for p in policies),
            "tasks": tasks, "episodes_per_policy_task": min(episodes), "rows": policies}


def scatter(result: dict[str, Any], path: Path) -> Path:
    """Imagined vs real success per policy (averaged over the tasks), one panel per model, Wilson intervals."""
    from matplotlib.figure import Figure

    evals = [(k, result[k]) for k in ("policy_eval", "policy_eval_ac_only") if k in result]
    fig = Figure(figsize=(5 * len(evals), 5), dpi=100)
    for ax, (_, ev) in zip(fig.subplots(1, len(evals), squeeze=False)[0], evals):
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        for r in ev["rows"]:
            x, y = r["real"]["rate"], r["imagined"]["rate"]
            err = lambda v, ci: [[max(0.0, v - ci[0])], [max(0.0, ci[1] - v)]]  # noqa: E731
            ax.errorbar([x], [y], xerr=err(x, r["real"]["ci95"]), yerr=err(y, r["imagined"]["ci95"]),
                        fmt="s" if r["imagination"] == "open-loop replay" else "o", capsize=2, ms=4)
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="real success rate", ylabel="imagined success rate",
               title=f"{ev['model']} (threshold {ev['threshold']:.2f}): Pearson {ev['pearson']:.2f}, "
                     f"MMRV {ev['mmrv']:.2f}")
        ax.title.set_fontsize(9)
        ax.text(0.02, 0.97, f"{len(ev['tasks'])} tasks x {ev['episodes_per_policy_task']} episodes / policy; "
                "squares: open-loop replay", fontsize=7, transform=ax.transAxes, va="top")
    fig.tight_layout()
    fig.savefig(path)
    return path


def hybrid_summary(hybrid_files: list[str], wam_files: list[str]) -> dict[str, Any]:
    """`hybrid` vs the same model's `wam` on the episodes both ran (same task and reset seed): real success,
    per task and pooled, and seconds per decision (flexwm eval outputs)."""
    def episodes(files: list[str]) -> tuple[dict[tuple[str, int], bool], list[dict[str, Any]]]:
        out, tasks = {}, []
        for f in files:
            for task, r in json.loads(Path(f).read_text())["per_task"].items():
                tasks.append(r)
                out.update({(task, int(e["seed"])): bool(e["success"]) for e in r["per_episode"]})
        return out, tasks

    (h, h_tasks), (w, w_tasks) = episodes(hybrid_files), episodes(wam_files)
    keys = sorted(set(h) & set(w))
    if not keys:
        raise SystemExit("the hybrid and wam evaluations share no (task, seed) episode; use the same --seed")
    latency = lambda ts: sum(t["latency"]["mean_s"] * t["latency"]["decisions"] for t in ts) / max(  # noqa: E731
        1, sum(t["latency"]["decisions"] for t in ts))
    per_task = {}
    for task in sorted({k[0] for k in keys}):
        ks = [k for k in keys if k[0] == task]
        per_task[task] = {"episodes": len(ks), "wam": sum(w[k] for k in ks), "hybrid": sum(h[k] for k in ks)}
    return {"episodes": len(keys), "wam": float(np.mean([w[k] for k in keys])),
            "hybrid": float(np.mean([h[k] for k in keys])), "seconds_per_decision": latency(h_tasks),
            "wam_seconds_per_decision": latency(w_tasks), "per_task": per_task,
            "hybrid_config": h_tasks[0].get("policy_config"), "sources": {"hybrid": hybrid_files, "wam": wam_files}}


def rl_summary(path: str) -> dict[str, Any]:
    """A benchmarks/rl.py result in the issue's schema: per-task real success before / after RL in imagination /
    after RL in the real simulator (fractions), episodes per task, and the pooled gains in points."""
    d = json.loads(Path(path).read_text())
    tasks = list(d["tasks"])
    rates = {k: [d["per_task"][t][k]["summary"]["rate"] for t in tasks] for k in ("before", "imagination", "real")}
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    return {"tasks": tasks, "before": rates["before"], "after_imagination": rates["imagination"],
            "after_real": rates["real"], "episodes": d["episodes_per_task"],
            "gain_imagination_points": 100 * (mean["imagination"] - mean["before"]),
            "gain_real_points": 100 * (mean["real"] - mean["before"]),
            "worst_task_change_imagination_points": min(100 * (a - b) for a, b in zip(rates["imagination"],
                                                                                      rates["before"])),
            "run": d["run"], "improve_config": d["improve_config"], "seed": d["seed"],
            "demos_per_task": d.get("demos_per_task"), "source": path, "command": d.get("command")}


def failure_play_summary(ac_error: str, calibrations: dict[str, str]) -> dict[str, Any]:
    """Claim 5a: models trained with and without the failure + play episodes at equal compute, compared on their
    action-conditioned error on held-out episodes per outcome and on their held-out imagined-success AUC."""
    d = json.loads(Path(ac_error).read_text())
    out: dict[str, Any] = {"source": ac_error, "command": d.get("command"), "models": {}}
    for name, r in d["runs"].items():
        cfg = json.loads((Path(r["run_dir"]) / "run_config.json").read_text())
        row: dict[str, Any] = {"run": r["run_dir"], "train_episodes": cfg.get("train_episodes"),
                               "samples": cfg["train"]["steps"] * cfg["train"]["batch_size"],
                               "latent_mse": {o: {h: x[h]["latent_mse"] for h in x if h[0] == "h" and h[1:].isdigit()}
                                              for o, x in r["by_outcome"].items()},
                               "psnr_db": {o: {h: x[h]["psnr_db"] for h in x if h[0] == "h" and h[1:].isdigit()}
                                           for o, x in r["by_outcome"].items()},
                               "windows": {o: x["windows"] for o, x in r["by_outcome"].items()}}
        if name in calibrations:
            c = json.loads(Path(calibrations[name]).read_text())
            row["calibration"] = {k: c[k] for k in ("auc", "balanced_accuracy", "threshold", "n_success",
                                                     "n_failure", "flow_steps", "command") if k in c}
        out["models"][name] = row
    return out


def assemble(args: argparse.Namespace) -> None:
    import subprocess

    from flexwm.evaluation.policy_eval import _jsonable

    recs = load_records(Path(args.dir))
    models = list(recs[0]["imagined_prob"])
    cal = {name: json.loads(Path(p).read_text()) for name, p in pairs(args.calibration, "--calibration").items()}
    evaluations: dict[str, Any] = {}
    for m in models:
        evaluations[m] = {"0.5": suite_stats(recs, m, 0.5)}
        if m in cal:
            evaluations[m]["calibrated"] = {**suite_stats(recs, m, float(cal[m]["threshold"])),
                                            "calibration": {"auc": cal[m]["auc"], "command": cal[m].get("command")}}
    if args.rule_data:  # rule and threshold chosen on closed-loop rollouts of other tasks and seeds
        rule_recs = load_records(Path(args.rule_data))
        for m in models:
            if any(m in r["imagined_prob"] for r in rule_recs):
                for rule in RULES:
                    sel = choose_threshold(rule_recs, m, rule)
                    evaluations[m][f"rollout-calibrated {rule}"] = {**suite_stats(recs, m, sel["threshold"], rule),
                                                                    "calibration": sel}
    main_key, base_key = args.main_key or "0.5", args.baseline_key or "0.5"
    out: dict[str, Any] = {"policy_eval": evaluations[args.main_model][main_key], "evaluations": evaluations}
    if args.baseline_model in evaluations:
        out["policy_eval_ac_only"] = evaluations[args.baseline_model][base_key]
    if args.speed:
        sp = json.loads(Path(args.speed).read_text())
        out["speed"] = {"imagined_per_real": sp["best_imagined_over_real"], "flow_steps": sp["flow_steps"],
                        "best": sp["best"], "real_sim_steps_per_s_64px": sp["real_sim_steps_per_s_64px"],
                        "auc_4_steps": cal[args.main_model]["auc"] if args.main_model in cal else None,
                        "source": args.speed}
        if len(args.speed_fast) != len(args.calibration_fast):
            raise SystemExit("give one --calibration-fast per --speed-fast (the same flow steps, in order)")
        settings = []
        for sf, cf in zip(args.speed_fast, args.calibration_fast):
            fast, cal_fast = json.loads(Path(sf).read_text()), json.loads(Path(cf).read_text())
            if fast["flow_steps"] != cal_fast.get("flow_steps"):
                raise SystemExit(f"{sf} is at {fast['flow_steps']} flow steps but {cf} at {cal_fast.get('flow_steps')}")
            settings.append({"flow_steps": fast["flow_steps"], "imagined_per_real": fast["best_imagined_over_real"],
                             "auc": cal_fast["auc"], "best": fast["best"], "source": sf, "calibration": cf})
        if settings:  # the first fast setting is the one the keys name
            out["speed"].update({"imagined_per_real_fast": settings[0]["imagined_per_real"],
                                 "fast_flow_steps": settings[0]["flow_steps"], "auc_fast": settings[0]["auc"],
                                 "settings": settings})
    if args.head_refit:
        h = json.loads(Path(args.head_refit).read_text())
        best = max(h["validation"]["grid"], key=lambda g: g["held_out_group_auc"])
        out["head_refit"] = {"episodes": h["episodes"], "successes": h["successes"], "l2": h["l2"],
                             "tasks": h["validation"]["groups"],
                             "trained_head_auc": h["validation"]["trained_head_auc"],
                             "refit_held_out_task_auc": best["held_out_group_auc"], "train_auc": h["train_auc"],
                             "source": args.head_refit, "command": h["command"]}
    if args.drift:  # benchmarks/train.py ac-error over a whole episode: imagined vs real frames per outcome
        dr = json.loads(Path(args.drift).read_text())
        horizon = max(int(k[1:]) for k in next(iter(dr["runs"].values()))["by_outcome"]["success"] if k[0] == "h"
                      and k[1:].isdigit())
        out["drift"] = {"frames": horizon, "steps": horizon * next(iter(dr["runs"].values()))["frame_stride"],
                        "source": args.drift, "plot": str(Path(args.drift).with_name(Path(args.drift).stem
                                                                                     + "_drift.png")),
                        "runs": {name: {o: {h: {k: x[h][k] for k in ("psnr_db", "copy_frame_psnr_db",
                                                                     "gain_over_copy_frame_ci95", "n")}
                                            for h in x if h[0] == "h" and h[1:].isdigit()} | {"windows": x["windows"]}
                                        for o, x in r["by_outcome"].items()} for name, r in dr["runs"].items()}}
    out["hybrid"] = hybrid_summary(args.hybrid, args.wam) if args.hybrid else None
    variants: dict[str, list[str]] = {}  # other hybrid settings on the same episodes, e.g. scored by agreement
    for item in args.hybrid_variant:
        name, _, path = item.partition("=")
        variants.setdefault(name, []).append(path)
    out["hybrid_variants"] = {name: hybrid_summary(files, args.wam) for name, files in variants.items()}
    out["rl"] = rl_summary(args.rl) if args.rl else None
    out["failure_play"] = (failure_play_summary(args.failure_play, pairs(args.failure_play_calibration,
                                                                         "--failure-play-calibration"))
                           if args.failure_play else None)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    out["commit"] = git.stdout.strip()
    out["scatter"] = str(scatter(out, Path(args.out).with_name(Path(args.out).stem + "_scatter.png")))
    write_result(args.out, _jsonable(out))
    for m, ev in evaluations.items():
        for key, s in ev.items():
            print(f"{m} @ {key} ({s['threshold']:.3f}): Pearson {s['pearson']:.2f}, Spearman {s['spearman']:.2f}, "
                  f"MMRV {s['mmrv']:.3f}; per cell Pearson {s['per_policy_task']['pearson']:.2f}")
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite", help="real episodes once, imagined in every model")
    s.add_argument("--suite", required=True)
    s.add_argument("--model", action="append", required=True, help="NAME=PATH (the first also acts as 'flexwm')")
    s.add_argument("--task", action="append", required=True)
    s.add_argument("--episodes", type=int, default=10)
    s.add_argument("--seed", type=int, default=30000)
    s.add_argument("--horizon", type=int, default=None)
    s.add_argument("--flow-steps", type=int, default=4)
    s.add_argument("--acting", default=None, help="the model flexwm policies without a checkpoint act with "
                                                   "(default: the first --model)")
    s.add_argument("--features", action="store_true", help="keep the first model's success-head inputs (npz)")
    s.add_argument("--out", required=True)
    f = sub.add_parser("fit-head", help="re-fit the success head on imagined rollouts with real outcomes")
    f.add_argument("--dir", required=True, help="the --out of `suite --features`")
    f.add_argument("--ckpt", required=True, help="the model whose features they are")
    f.add_argument("--out", required=True)
    a = sub.add_parser("assemble", help="statistics and the results file")
    a.add_argument("--dir", required=True)
    a.add_argument("--calibration", action="append", default=[], help="MODEL=FILE (flexwm calibrate output)")
    a.add_argument("--rule-data", default=None, help="a `suite` --out on other tasks / seeds: chooses the rule "
                                                      "(max or mean over frames) thresholds there")
    a.add_argument("--main-model", default="flexible")
    a.add_argument("--main-key", default=None, help="which evaluation of the main model is the headline "
                                                    "(0.5, calibrated, rollout-calibrated max|mean; default 0.5)")
    a.add_argument("--baseline-key", default=None)
    a.add_argument("--baseline-model", default="ac-only")
    a.add_argument("--speed", default=None)
    a.add_argument("--speed-fast", action="append", default=[], help="benchmarks/imagine.py output at fewer "
                                                                     "flow steps (repeatable)")
    a.add_argument("--calibration-fast", action="append", default=[], help="flexwm calibrate output at those flow "
                                                                           "steps (one per --speed-fast)")
    a.add_argument("--head-refit", default=None, help="head_tuning.json of `fit-head`")
    a.add_argument("--drift", default=None, help="benchmarks/train.py ac-error output over a whole episode")
    a.add_argument("--hybrid", action="append", default=[], help="flexwm eval outputs of --policy hybrid")
    a.add_argument("--hybrid-variant", action="append", default=[],
                   help="NAME=FILE: flexwm eval outputs of another hybrid setting on the same seeds (repeat a NAME "
                        "for its several files)")
    a.add_argument("--wam", action="append", default=[], help="flexwm eval outputs of the same model's wam, "
                                                              "same seeds (paired by task and seed)")
    a.add_argument("--rl", default=None, help="benchmarks/rl.py output")
    a.add_argument("--failure-play", default=None, help="benchmarks/train.py ac-error output of models trained "
                                                        "with and without the failure + play episodes")
    a.add_argument("--failure-play-calibration", action="append", default=[],
                   help="NAME=FILE: flexwm calibrate output of each of those models")
    a.add_argument("--out", required=True)
    args = ap.parse_args()
    {"suite": run_suite, "fit-head": fit_head, "assemble": assemble}[args.cmd](args)


if __name__ == "__main__":
    main()
