"""The headline benchmark: the flexible model vs `wam-only` vs `ac-only` (same data, same tokenizer and latent
cache, same training steps and batch), with a behaviour-cloning baseline of similar size alongside.

    make bench                                   # = python benchmarks/bench.py --preset cpu
    python benchmarks/bench.py --preset cpu --data data/avdc --prefix runs/cpu --episodes 5 --jobs 2

Stages (each resumes or is skipped when its output exists, so an interrupted benchmark continues):
  1. data        flexwm collect of the 11 AVDC tasks: experts, noisy experts (failures) and play (if --data is missing)
  2. train       flexwm train --variant flexible | ac-only | wam-only, sharing the first run's tokenizer + latents
  3. ac-error    benchmarks/train.py ac-error: action-conditioned prediction error on held-out success,
                 failure and play episodes (latent MSE, decoded PSNR at 1/4/16 frames) for each variant
  4. bc          flexwm train-bc on the same successes (same held-out split, same samples seen)
  5. act         benchmarks/act.py: WAM and hybrid success for every variant (cem for the action-conditioned
                 ones), bc and random, on held-out instructions in the real simulator, with decision latency
  6. policy-eval flexwm evaluate-policies (examples/suite.yaml) with each variant that can simulate
  7. speed       benchmarks/imagine.py (imagined vs real steps/s) and benchmarks/train.py speed
  8. rl          benchmarks/rl.py: a weak BC improved by RL in each simulating variant vs in the real simulator
Writes benchmarks/results/bench_<preset>.json (every number with the file it came from) and prints a
markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

HERE = Path(__file__).resolve().parent
VARIANTS = ("flexible", "ac-only", "wam-only")
# which ways to act are run per variant: every variant gets wam and hybrid (so the table shows what a missing
# training mode costs); the action-conditioned variants also get cem (pure search in the learned simulator)
PAIRS = {"flexible": ("wam", "hybrid", "cem"), "ac-only": ("wam", "hybrid", "cem"), "wam-only": ("wam", "hybrid")}


def run(cmd: list[str], log: Path, threads: int | None = None) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"[bench] $ {' '.join(map(str, cmd))}", flush=True)
    start = time.perf_counter()
    with open(log, "a") as fh:
        r = subprocess.run([str(c) for c in cmd], env=env, stdout=fh, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise SystemExit(f"[bench] failed ({r.returncode}); see {log}")
    print(f"[bench]   {time.perf_counter() - start:.0f} s", flush=True)


def flexwm(*args: object) -> list[str]:
    return [sys.executable, "-m", "flexwm.cli", *map(str, args)]


def finished(run_dir: Path, steps: int | None) -> bool:
    """Whether a run's newest checkpoint is at its last step (`steps`, else the run config's)."""
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    if not ckpts or not (run_dir / "run_config.json").exists():
        return False
    target = steps or json.loads((run_dir / "run_config.json").read_text())["train"]["steps"]
    return int(ckpts[-1].name.split("-")[1]) >= target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", help="tiny | cpu | gpu (world model and bc)")
    p.add_argument("--data", default="data/avdc", help="dataset (collected first if missing)")
    p.add_argument("--prefix", default=None, help="run directories PREFIX-VARIANT (default runs/bench-PRESET)")
    p.add_argument("--tokenizer-run", default=None,
                   help="reuse this run's tokenizer/ and latents/ for all variants (default: the flexible run's)")
    p.add_argument("--tasks", default="avdc", help="tasks to collect and act on (comma-separated, or avdc)")
    p.add_argument("--collect-episodes", type=int, default=30, help="expert episodes per task when collecting")
    p.add_argument("--collect-max-steps", type=int, default=200)
    p.add_argument("--steps", type=int, default=None, help="training steps per variant (default: the preset's)")
    p.add_argument("--bc-steps", type=int, default=None, help="bc steps (default: the variants' samples / 32)")
    p.add_argument("--episodes", type=int, default=5, help="real-simulator episodes per task and policy")
    p.add_argument("--max-steps", type=int, default=None, help="episode length limit when acting")
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--pe-task", default="button-press-v3", help="task of the policy-evaluation suite")
    p.add_argument("--pe-episodes", type=int, default=10)
    p.add_argument("--pe-horizon", type=int, default=None, help="steps per policy-evaluation episode")
    p.add_argument("--pe-suite", default=str(HERE.parent / "examples" / "suite.yaml"))
    p.add_argument("--ac-episodes", type=int, default=15, help="held-out episodes per outcome for ac-error")
    p.add_argument("--rl-variants", default="flexible,ac-only", help="variants to run RL in imagination with")
    p.add_argument("--rl-tasks", default="button-press-topdown-v3,handle-press-v3,faucet-open-v3")
    p.add_argument("--rl-episodes", type=int, default=50, help="real episodes per task before and after RL")
    p.add_argument("--rl-bc-steps", type=int, default=1500, help="steps of the weak BC")
    p.add_argument("--rl-set", action="append", default=[], help="ImproveConfig override for the rl stage")
    p.add_argument("--act-pairs", nargs="+", default=None,
                   help="VARIANT:policy,policy,... to run instead of the default pairs (e.g. to save time)")
    p.add_argument("--act-set", action="append", default=[],
                   help="POLICY:key=value policy override for the act stage (repeatable), e.g. cem:population=16")
    p.add_argument("--jobs", type=int, default=2, help="evaluations at once (one thread each)")
    p.add_argument("--skip", default="", help="comma-separated stages to skip (e.g. speed)")
    p.add_argument("--out", default=None, help="summary JSON (default benchmarks/results/bench_PRESET.json)")
    args = p.parse_args()

    prefix = Path(args.prefix or f"runs/bench-{args.preset}")
    out = Path(args.out or HERE / "results" / f"bench_{args.preset}.json")
    parts = Path(str(out.with_suffix("")))  # per-stage result files
    parts.mkdir(parents=True, exist_ok=True)
    log = parts / "bench.log"
    skip = set(filter(None, args.skip.split(",")))
    data = Path(args.data)
    stage_s: dict[str, float] = {}

    def stage(name: str):
        print(f"[bench] == {name}", flush=True)
        stage_s[name] = time.perf_counter()

    def done(name: str) -> None:
        stage_s[name] = time.perf_counter() - stage_s[name]

    # 1. data
    stage("data")
    if not (data / "meta" / "info.json").exists():
        n = args.collect_episodes
        run(flexwm("collect", "--tasks", args.tasks, "--source", "expert", "--episodes", n,
                   "--max-steps", args.collect_max_steps, "--out", data), log)
        run(flexwm("collect", "--tasks", args.tasks, "--source", "noisy", "--noise", "0.5,1.0", "--episodes",
                   max(1, n // 3), "--max-steps", args.collect_max_steps, "--seed", 1000, "--out", data, "--resume"),
            log)
        run(flexwm("collect", "--tasks", args.tasks, "--source", "play", "--episodes", max(1, n // 3),
                   "--max-steps", args.collect_max_steps, "--seed", 2000, "--out", data, "--resume"), log)
    done("data")

    # 2. the three variants, one tokenizer and latent cache
    stage("train")
    runs = {v: Path(f"{prefix}-{v}") for v in VARIANTS}
    share: list[str] = []
    if args.tokenizer_run:
        tok = Path(args.tokenizer_run)
        share = ["--set", f"tokenizer_path={tok / 'tokenizer'}", "--set", f"latent_dir={tok / 'latents'}"]
    for v in VARIANTS:
        cmd = flexwm("train", "--data", data, "--preset", args.preset, "--variant", v, "--out", runs[v], *share)
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        if not finished(runs[v], args.steps):
            run(cmd + (["--resume"] if (runs[v] / "checkpoints").exists() else []), log)
        if not share:
            share = ["--set", f"tokenizer_path={runs[v] / 'tokenizer'}", "--set", f"latent_dir={runs[v] / 'latents'}"]
    done("train")
    cfg = json.loads((runs["flexible"] / "run_config.json").read_text())
    samples = cfg["train"]["steps"] * cfg["train"]["batch_size"]

    # 3. action-conditioned error on held-out episodes, all variants on the flexible run's split
    ac_json = parts / "ac_error.json"
    if "ac-error" not in skip and not ac_json.exists():
        stage("ac-error")
        run([sys.executable, str(HERE / "train.py"), "ac-error", "--runs", *[f"{v}={runs[v]}" for v in VARIANTS],
             "--split-from", runs["flexible"], "--starts", 2, "--max-episodes", args.ac_episodes, "--zero-noise",
             "--flow-steps", args.flow_steps, "--out", ac_json], log)
        done("ac-error")

    # 4. behaviour cloning with the same number of samples
    stage("bc")
    bc = Path(f"{prefix}-bc")
    if not (bc / "model.safetensors").exists():
        run(flexwm("train-bc", "--data", data, "--preset", args.preset, "--out", bc,
                   "--steps", args.bc_steps or max(1, samples // 32), "--batch-size", 32,
                   "--heldout-every", cfg.get("heldout_every", 10)), log)
    done("bc")

    # 5. acting on the real simulator
    act_json = parts / "act.json"
    if "act" not in skip:
        stage("act")
        cmd = [sys.executable, str(HERE / "act.py"), "--runs", *[f"{v}={runs[v]}" for v in VARIANTS],
               "--pairs", *(args.act_pairs or [f"{v}:{','.join(PAIRS[v])}" for v in VARIANTS]), "--bc", bc,
               "--tasks", args.tasks,
               "--episodes", args.episodes, "--flow-steps", args.flow_steps, "--jobs", args.jobs, "--out", act_json,
               *[x for o in args.act_set for x in ("--set", o)]]
        if args.max_steps:
            cmd += ["--max-steps", args.max_steps]
        run(cmd, log)
        done("act")

    # 6. closed-loop policy evaluation with each variant that was trained to simulate
    pe: dict[str, Path] = {}
    if "policy-eval" not in skip:
        stage("policy-eval")
        for v in ("flexible", "ac-only"):
            pe[v] = parts / f"policy_eval_{v}"
            if not (pe[v] / "policy_eval.json").exists():
                horizon = ["--horizon", args.pe_horizon] if args.pe_horizon else []
                run(flexwm("evaluate-policies", "--ckpt", runs[v], "--suite", args.pe_suite, "--task", args.pe_task,
                           "--episodes", args.pe_episodes, "--flow-steps", args.flow_steps, "--out", pe[v], *horizon),
                    log)
        done("policy-eval")

    # 7. speed
    speed_json, imagine_json = parts / "train_speed.json", parts / "imagine_speed.json"
    if "speed" not in skip:
        stage("speed")
        if not imagine_json.exists():
            run([sys.executable, str(HERE / "imagine.py"), "--run", runs["flexible"], "--flow-steps", args.flow_steps,
                 "--out", imagine_json], log)
        if not speed_json.exists():
            run([sys.executable, str(HERE / "train.py"), "speed", "--presets", args.preset, "--steps", 8,
                 "--out", speed_json], log)
        done("speed")

    # 8. RL in imagination: a weak BC improved in each simulating variant, and in the real simulator
    rl: dict[str, Path] = {}
    if "rl" not in skip:
        stage("rl")
        for v in filter(None, args.rl_variants.split(",")):
            rl[v] = parts / f"rl_{v}.json"
            if not rl[v].exists():
                extra = [x for o in args.rl_set for x in ("--set", o)]
                run([sys.executable, str(HERE / "rl.py"), "--run", runs[v], "--data", data, "--tasks", args.rl_tasks,
                     "--episodes", args.rl_episodes, "--flow-steps", args.flow_steps,
                     "--bc-preset", args.preset, "--bc-steps", args.rl_bc_steps, *extra, "--out", rl[v]], log)
        done("rl")

    summary = summarize(runs, bc, act_json, ac_json, pe, imagine_json, speed_json, rl)
    summary["stage_seconds"] = stage_s
    summary["setup"] = {k: v for k, v in vars(args).items()}
    write_result(out, summary)
    print(markdown(summary))
    print(f"wrote {out}")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def summarize(runs: dict[str, Path], bc: Path, act_json: Path, ac_json: Path, pe: dict[str, Path],
              imagine_json: Path, speed_json: Path, rl: dict[str, Path]) -> dict:
    rows: dict[str, dict] = {v: {"run": str(runs[v])} for v in VARIANTS}
    rows["bc"], rows["random"] = {"run": str(bc)}, {}
    for v in VARIANTS:
        s = _read(runs[v] / "summary.json") or {}
        rows[v]["train_steps_per_s"] = s.get("steps_per_s")  # summary.json: the last process that trained
        rows[v]["train_steps"] = s.get("step")
    act = _read(act_json)
    for r in (act or {}).get("rows", []):
        key = "random" if r["policy"] == "random" else r["model"]
        rows[key][f"{r['policy']}_success"] = {"average_over_tasks": r["average_over_tasks"], "pooled": r["pooled"],
                                              "latency_mean_s": r["latency_mean_s"]}
    ac = _read(ac_json)
    for name, res in (ac or {}).get("runs", {}).items():
        rows[name]["ac_error"] = {o: {h: {k: res["by_outcome"][o][h][k] for k in
                                          ("latent_mse", "psnr_db", "copy_latent_mse", "copy_frame_psnr_db")}
                                      for h in ("h1", "h16")} for o in res["by_outcome"]}
    for v, path in pe.items():
        res = _read(path / "policy_eval.json")
        if res:
            rows[v]["policy_eval"] = {k: res.get(k) for k in ("task", "pearson", "spearman", "mmrv")}
    for v in rows:
        res = _read(rl[v]) if v in rl else None
        rows[v]["rl_gain"] = None if res is None else {
            "imagination_points": res["gain_imagination_points"], "real_same_budget_points": res["gain_real_points"],
            "before": res["average"]["before"], "tasks": res["tasks"], "episodes_per_task": res["episodes_per_task"]}
    imagine, speed = _read(imagine_json), _read(speed_json)
    return {"rows": rows, "files": {"act": str(act_json), "ac_error": str(ac_json),
                                    "policy_eval": {k: str(v) for k, v in pe.items()},
                                    "imagine_speed": str(imagine_json), "train_speed": str(speed_json),
                                    "rl": {k: str(v) for k, v in rl.items()}},
            "imagined_over_real_steps": imagine and imagine.get("best_imagined_over_real"),
            "train_samples_per_s": speed and {k: v.get("samples_per_s") for k, v in speed.get("presets", {}).items()}}


def markdown(summary: dict) -> str:
    def pct(row: dict, key: str) -> str:
        r = row.get(key)
        if not r:
            return "–"
        p = r["pooled"]
        return (f"{r['average_over_tasks']:.1%} ({p['successes']}/{p['episodes']}; "
                f"{p['ci95'][0]:.0%}–{p['ci95'][1]:.0%})")

    def ac(row: dict, outcome: str) -> str:
        a = (row.get("ac_error") or {}).get(outcome)
        if not a:
            return "–"
        return f"{a['h1']['latent_mse']:.3f} / {a['h16']['latent_mse']:.3f}"

    def pe(row: dict) -> str:
        r = row.get("policy_eval")
        if not r:
            return "–"
        f = lambda x: "undefined" if x is None or x != x else f"{x:.2f}"  # noqa: E731 - a rate constant over policies
        return f"{f(r['pearson'])} / {f(r['mmrv'])}"

    def rlg(row: dict) -> str:
        r = row.get("rl_gain")
        if not r:
            return "not run"
        return (f"{r['imagination_points']:+.0f} pts (from {r['before']:.0%}; real-sim same budget "
                f"{r['real_same_budget_points']:+.0f})")

    lines = ["| model | WAM success | hybrid success | CEM success | AC latent MSE h1 / h16, failure | play | "
             "policy eval Pearson / MMRV | RL gain |", "|---|---|---|---|---|---|---|---|"]
    rows = summary["rows"]
    for name in (*VARIANTS, "bc", "random"):
        row = rows.get(name, {})
        if name in ("bc", "random"):
            key = f"{name}_success"
            lines.append(f"| {name} | {pct(row, key)} | – | – | – | – | – | – |")
            continue
        lines.append(f"| {name} | {pct(row, 'wam_success')} | {pct(row, 'hybrid_success')} | "
                     f"{pct(row, 'cem_success')} | {ac(row, 'failure')} | {ac(row, 'play')} | {pe(row)} | "
                     f"{rlg(row)} |")
    copy = (rows["flexible"].get("ac_error") or {}).get("failure")
    if copy:
        lines.append(f"\ncopy-the-current-frame latent MSE (failure, h1 / h16): {copy['h1']['copy_latent_mse']:.3f} / "
                     f"{copy['h16']['copy_latent_mse']:.3f}")
    if summary.get("imagined_over_real_steps"):
        lines.append(f"imagined / real steps per second (batched): {summary['imagined_over_real_steps']:.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
