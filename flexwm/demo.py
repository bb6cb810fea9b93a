"""`flexwm demo`: one command that shows what one flexibly conditioned world model does, on 2 CPU cores.

    collect a small Meta-World dataset (successes, failures, play)      runs/demo/data
    take the small checkpoint shipped with flexwm (or train one: --train) runs/demo/model
    act in the real simulator: wam, best-of-n, cem, hybrid, random       runs/demo/model/eval-*.json
    closed-loop policy evaluation (real vs imagined success)             runs/demo/model/policy-eval-*/
    the HTML report (videos, plans, success, curves, config)             runs/demo/report.html

The shipped checkpoint (flexwm/assets/demo/) was trained by `flexwm train` with the `demo` preset on exactly
the data this command collects (the collection is deterministic); `make demo-checkpoint` reproduces it and
`flexwm/assets/demo/RECIPE.md` records how. Every stage resumes: rerunning skips what is already there.
Numbers printed here come from few episodes: they show the machinery, not the model's quality.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from flexwm.errors import ConfigError

ASSET_DIR = Path(__file__).parent / "assets" / "demo"
TASKS = ["button-press-v3", "door-open-v3", "drawer-close-v3"]
EVAL_TASK = "button-press-v3"
POLICIES = ["wam", "best-of-n", "cem", "hybrid", "random"]


def collect_config(episodes: int = 4, workers: int = 2) -> Any:
    from flexwm.collect import CollectConfig

    return CollectConfig(env="metaworld", tasks=TASKS, sources=["expert", "noisy", "play"], episodes=episodes,
                         noise=[1.0], workers=workers, max_steps=150)


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def install_shipped_model(model_dir: Path, data_dir: Path) -> Path:
    """Copy the shipped checkpoint into a run directory that points at the freshly collected data."""
    if not (ASSET_DIR / "model.safetensors").exists():
        raise ConfigError(f"no shipped demo checkpoint in {ASSET_DIR}; run `flexwm demo --train` (or "
                          "`make demo-checkpoint`) to train one")
    if (model_dir / "checkpoints").exists():
        return model_dir
    from flexwm.training.run import _split

    tmp = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints" / "step-shipped").mkdir(parents=True)
    shutil.copytree(ASSET_DIR / "tokenizer", tmp / "tokenizer")
    for f in ("model.safetensors", "config.json"):
        shutil.copy(ASSET_DIR / f, tmp / "checkpoints" / "step-shipped" / f)
    cfg = json.loads((ASSET_DIR / "config.json").read_text())
    cfg.update(data=[str(data_dir)], tokenizer_path=None, latent_dir=None)
    (tmp / "run_config.json").write_text(json.dumps(cfg, indent=2))
    (tmp / "checkpoints" / "latest.json").write_text(json.dumps({"step": 0, "path": "step-shipped"}))
    from flexwm.data import FlexDataset

    n = len(FlexDataset(data_dir))
    (tmp / "split.json").write_text(json.dumps({"data": [str(data_dir)],
                                                "heldout": [_split(n, cfg.get("heldout_every", 10))[1]]}))
    for name in ("metrics.jsonl", "command.json", "RECIPE.md"):
        if (ASSET_DIR / name).exists():
            shutil.copy(ASSET_DIR / name, tmp / name)
    tmp.rename(model_dir)
    return model_dir


def train_demo_model(data_dir: Path, model_dir: Path, device: str = "cpu") -> Path:
    from flexwm.training.run import run_config, train_world_model

    cfg = run_config("demo", data=[str(data_dir)], device=device)
    train_world_model(cfg, model_dir, resume=(model_dir / "checkpoints").exists(),
                      command=["flexwm", "demo", "--train"])
    return model_dir


def act(model_dir: Path, episodes: int, policies: list[str], device: str = "cpu") -> list[dict]:
    """Each way to act on EVAL_TASK in the real simulator, with held-out instructions; the first episode's
    real frames and the model's imagined plans are kept as a video for the report."""
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json, plain_json
    from flexwm.planning import make_policy
    from flexwm.report import save_eval_videos

    wm = load_run(model_dir, steps=4, device=device)
    rows = []
    for name in policies:
        out = model_dir / f"eval-{name}.json"
        if out.exists():
            rows.append(json.loads(out.read_text()))
            continue
        pol = make_policy(name, wm, budget="tiny")
        t0 = time.perf_counter()
        r = evaluate_policy(pol, "metaworld", EVAL_TASK, episodes, seed=10_000, max_steps=150,
                            instruction_split="eval", record_video=1)
        videos = r.pop("videos")
        save_eval_videos(model_dir, name, EVAL_TASK, videos)
        res = {"policy": name, "env": "metaworld", "episodes_per_task": episodes, "seed": 10_000,
               "instructions": "eval", "flow_steps": 4, "policy_overrides": "tiny budget", "complete": True,
               "average_over_tasks": r["summary"]["rate"], "pooled": r["summary"], "per_task": {EVAL_TASK: r},
               "seconds": time.perf_counter() - t0}
        atomic_write_json(out, plain_json(res))
        s = r["summary"]
        print(f"{name:10s} {s['successes']}/{s['episodes']} on {EVAL_TASK} "
              f"({(r['latency']['mean_s'] or 0) * 1000:.0f} ms/plan)", flush=True)
        rows.append(res)
    return rows


def policy_evaluation(model_dir: Path, episodes: int, device: str = "cpu") -> dict:
    from flexwm.evaluation.policy_eval import evaluate_suite
    from flexwm.inference import load_run

    out = model_dir / f"policy-eval-{EVAL_TASK}"
    if (out / "policy_eval.json").exists():
        return json.loads((out / "policy_eval.json").read_text())
    suite = [{"name": "expert", "kind": "expert"}, {"name": "noisy-0.5", "kind": "noisy", "noise": 0.5},
             {"name": "noisy-1.5", "kind": "noisy", "noise": 1.5}, {"name": "random", "kind": "random"}]
    wm = load_run(model_dir, steps=4, device=device)
    res = evaluate_suite({"policies": suite}, wm, "metaworld", EVAL_TASK, episodes=episodes, seed=20_000,
                         horizon=96, out_dir=out)
    print(f"policy evaluation: pearson {res.get('pearson')}, mmrv {res.get('mmrv')}", flush=True)
    return res



def run_demo(out: str | Path = "runs/demo", *, train: bool = False, episodes: int = 4, workers: int = 2,
             eval_episodes: int = 3, policies: list[str] | None = None, device: str = "cpu") -> Path:
    from flexwm.collect import collect
    from flexwm.config import check_device
    from flexwm.report import build_report

    check_device(device)
    out = Path(out)
    t0 = time.perf_counter()
    data_dir, model_dir = out / "data", out / "model"
    _stage(f"1/5 collect {len(TASKS)} Meta-World tasks x (expert, noisy, play) x {episodes} episodes")
    collect(collect_config(episodes, workers), data_dir, resume=True)
    _stage("2/5 " + ("train the demo model (--train)" if train else "install the shipped demo checkpoint"))
    if train:
        train_demo_model(data_dir, model_dir, device)
    else:
        install_shipped_model(model_dir, data_dir)
    _stage(f"3/5 act in the real simulator on {EVAL_TASK}, {eval_episodes} episodes per way to act")
    act(model_dir, eval_episodes, policies or POLICIES, device)
    _stage("4/5 closed-loop policy evaluation: the same policies in the simulator and in the model")
    policy_evaluation(model_dir, eval_episodes, device)
    _stage("5/5 report")
    path = build_report(model_dir, out / "report.html", rollouts=3, device=device)
    print(f"\nwrote {path} in {time.perf_counter() - t0:.0f} s; open it in a browser", flush=True)
    return path


def export_demo_checkpoint(run_dir: str | Path, dest: Path = ASSET_DIR) -> Path:
    """Copy a demo-preset run's newest checkpoint (weights in float16) and tokenizer into `dest`, with its
    config, training curves, commands and a RECIPE.md saying how to reproduce it."""
    import torch
    from safetensors.torch import load_file, save_file

    from flexwm.io import atomic_write_text
    from flexwm.runs import find_latest

    run_dir = Path(run_dir)
    ckpt = find_latest(run_dir)
    if ckpt is None:
        raise ConfigError(f"{run_dir} has no checkpoint; train it first (make demo-checkpoint)")
    cfg = json.loads((run_dir / "run_config.json").read_text())
    if cfg.get("preset") != "demo":
        raise ConfigError(f"{run_dir} was trained with preset {cfg.get('preset')!r}; the shipped model is 'demo'")
    tok_dir = Path(cfg["tokenizer_path"]) if cfg.get("tokenizer_path") else run_dir / "tokenizer"
    dest.mkdir(parents=True, exist_ok=True)
    half = lambda sd: {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}  # noqa: E731
    save_file(half(load_file(str(ckpt / "model.safetensors"))), str(dest / "model.safetensors"))
    shutil.copy(ckpt / "config.json", dest / "config.json")
    (dest / "tokenizer").mkdir(exist_ok=True)
    save_file(half(load_file(str(tok_dir / "model.safetensors"))), str(dest / "tokenizer" / "model.safetensors"))
    shutil.copy(tok_dir / "config.json", dest / "tokenizer" / "config.json")
    for name in ("metrics.jsonl", "command.json"):
        if (run_dir / name).exists():
            shutil.copy(run_dir / name, dest / name)
    from flexwm.io import FILE_MODE

    for f in dest.rglob("*"):
        if f.is_file():
            f.chmod(FILE_MODE)
    steps = json.loads((ckpt / "training_state" / "state.json").read_text())["step"]
    atomic_write_text(dest / "RECIPE.md", f"""# The shipped demo checkpoint

Trained by flexwm itself on the data `flexwm demo` collects ({len(TASKS)} Meta-World tasks: {", ".join(TASKS)};
expert, noisy (noise 1.0) and play episodes, 4 per task and source, 150 steps, reset seeds from 0):

    make demo-checkpoint
    # = flexwm demo --train --out runs/demo-train  (collect, then `train` with the demo preset)
    #   flexwm export-demo runs/demo-train/model

Preset `demo` (flexwm/training/run.py), {steps} steps; weights stored in float16 (the model runs in float32).
Full resolved config: config.json. Training curves: metrics.jsonl. Torch {torch.__version__}.
""")
    return dest
