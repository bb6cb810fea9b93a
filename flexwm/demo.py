"""`flexwm demo`: one command that shows what one flexibly conditioned world model does, on 2 CPU cores.

    collect a small Meta-World set on the demo's tasks (successes, failures, play)   runs/demo/data
    install the model (see "Which model" below; or train one: --train)               runs/demo/model
    act in the real simulator with each way to act, held-out instructions            runs/demo/model/eval-*.json
    closed-loop policy evaluation: experts, noisy experts, random; real vs imagined  runs/demo/model/policy-eval-*/
    the HTML report (videos, plans, success, config)                                 runs/demo/report.html

Which model (`--model`, default `auto`):

* `checkpoints/avdc11-cpu` (found under the current directory or the source checkout that holds this flexwm):
  the flexible model trained on the 11 AVDC Meta-World tasks (`flexwm export` folder, 5.2M parameters, 64x64).
  The demo acts where it succeeds (door-close-v3, handle-press-v3) with wam, best-of-n, hybrid and random, and
  evaluates the policy suite on door-close-v3; about 7 minutes on an idle 2-core CPU. Its own 1,210-episode
  training set is not needed: the report's real vs imagined videos come from a few episodes collected here on the
  demo's tasks, from reset seeds the model was not trained on (30000 on; its data used 0-2019), so all of them
  count as held out. cem is left out: it plans from random action sequences and took 1-1.5 s per plan without a
  success on door-close-v3 (0/3 episodes, tiny and cpu budgets); `flexwm eval --policy cem` runs it.
* `tiny` (the fallback, e.g. for a pip-installed flexwm): the small checkpoint shipped inside flexwm
  (flexwm/assets/demo/), trained by `flexwm train` with the `demo` preset on exactly the data this setup
  collects (the collection is deterministic); `make demo-checkpoint` reproduces it and
  `flexwm/assets/demo/RECIPE.md` records how. It shows the machinery but does not succeed (wam 0/3 on
  button-press-v3). `--train` trains it here instead.
* a path: another exported Meta-World model folder, run with the avdc11-cpu setup.

Every stage resumes: rerunning skips what is already there (OUT/demo.json records which model OUT belongs to).
Success rates come from a few episodes each and are printed with their episode counts. The policy evaluation
prints its correlations in words: where real or imagined success is the same for every policy, it says so
instead of printing an undefined number.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexwm.errors import ConfigError

ASSET_DIR = Path(__file__).parent / "assets" / "demo"
AVDC_MODEL = Path("checkpoints") / "avdc11-cpu"  # looked for under the current directory, then the source checkout
TASKS = ["button-press-v3", "door-open-v3", "drawer-close-v3"]  # what the tiny demo checkpoint was trained on
MAX_STEPS = 150  # steps per collected and acted episode


@dataclass(frozen=True)
class DemoSetup:
    """What the demo does with one model: what it collects, where and how it acts, which suite it evaluates."""

    name: str
    tasks: tuple[str, ...]  # collected: the report's real vs imagined videos replay these episodes
    collect_seed: int  # first reset seed of the collection
    episodes: int  # collected per task and source
    noise: float  # of the noisy expert (mostly failures)
    act_tasks: tuple[str, ...]
    policies: tuple[str, ...]
    budget: str  # flexwm.planning.BUDGETS
    eval_episodes: int  # real-simulator episodes per way to act and task
    suite_task: str
    suite: tuple[dict[str, Any], ...]
    suite_episodes: int
    horizon: int  # steps per policy-evaluation episode


# checkpoints/avdc11-cpu: door-close 10/10, handle-press 9/10 with wam (flexwm eval, 10 episodes per task, reset
# seeds 10000-10009, held-out instructions). Real success of the suite on door-close-v3 over 96 steps falls
# with the noise (reset seeds 20000-20009: expert 10/10, noise 0.75 7/10, 1.0 5/10, 1.25 2/10, random 0/10), so
# the policies have different real success rates to rank.
AVDC = DemoSetup(
    name="avdc11-cpu", tasks=("door-close-v3", "handle-press-v3"), collect_seed=30_000, episodes=1, noise=1.5,
    act_tasks=("door-close-v3", "handle-press-v3"), policies=("wam", "best-of-n", "hybrid", "random"),
    budget="tiny", eval_episodes=5, suite_task="door-close-v3",
    suite=({"name": "expert", "kind": "expert"}, {"name": "noisy-0.75", "kind": "noisy", "noise": 0.75},
           {"name": "noisy-1.0", "kind": "noisy", "noise": 1.0}, {"name": "noisy-1.25", "kind": "noisy", "noise": 1.25},
           {"name": "random", "kind": "random"}),
    suite_episodes=10, horizon=96)
TINY = DemoSetup(
    name="tiny", tasks=tuple(TASKS), collect_seed=0, episodes=4, noise=1.0, act_tasks=("button-press-v3",),
    policies=("wam", "best-of-n", "cem", "hybrid", "random"), budget="tiny", eval_episodes=3,
    suite_task="button-press-v3",
    suite=({"name": "expert", "kind": "expert"}, {"name": "noisy-0.5", "kind": "noisy", "noise": 0.5},
           {"name": "noisy-1.5", "kind": "noisy", "noise": 1.5}, {"name": "random", "kind": "random"}),
    suite_episodes=6, horizon=96)


def find_avdc_model() -> Path | None:
    """checkpoints/avdc11-cpu under the current directory, else under the source checkout this flexwm lives in;
    None when neither has it (e.g. a pip-installed flexwm)."""
    from flexwm.runs import is_exported

    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if is_exported(root / AVDC_MODEL):
            return root / AVDC_MODEL
    return None


def resolve_model(model: str | Path = "auto", train: bool = False) -> tuple[DemoSetup, Path | None]:
    """(setup, exported model folder or None for the tiny checkpoint) for `--model` auto | tiny | PATH."""
    from flexwm.runs import is_exported

    if train:
        if str(model) not in ("auto", "tiny"):
            raise ConfigError(f"--train trains the tiny demo model; it cannot be combined with --model {model}")
        return TINY, None
    if str(model) == "tiny":
        return TINY, None
    if str(model) == "auto":
        found = find_avdc_model()
        return (AVDC, found) if found is not None else (TINY, None)
    path = Path(model)
    if not is_exported(path):
        raise ConfigError(f"--model {path}: not an exported model folder (no model_index.json); give auto, tiny, or "
                          "a folder written by `flexwm export`")
    from flexwm.models.pretrained import read_index

    if "metaworld" not in read_index(path).get("envs", {}):
        raise ConfigError(f"--model {path} was not trained for Meta-World; the demo acts on Meta-World tasks")
    return AVDC, path


def collect_config(setup: DemoSetup = TINY, episodes: int | None = None, workers: int = 2) -> Any:
    from flexwm.collect import CollectConfig

    return CollectConfig(env="metaworld", tasks=list(setup.tasks), sources=["expert", "noisy", "play"],
                         episodes=episodes or setup.episodes, noise=[setup.noise], workers=workers, max_steps=MAX_STEPS,
                         seed=setup.collect_seed)


def _stage(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _write_split(run_dir: Path, data_dir: Path, heldout: list[int]) -> None:
    (run_dir / "split.json").write_text(json.dumps({"data": [str(data_dir)], "heldout": [heldout]}))


def install_tiny_model(model_dir: Path, data_dir: Path) -> Path:
    """Copy the tiny checkpoint shipped in flexwm into a run directory that points at the freshly collected data."""
    if not (ASSET_DIR / "model.safetensors").exists():
        raise ConfigError(f"no shipped demo checkpoint in {ASSET_DIR}; run `flexwm demo --train` (or "
                          "`make demo-checkpoint`) to train one")
    if (model_dir / "checkpoints").exists():
        return model_dir
    from flexwm.data import FlexDataset
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
    _write_split(tmp, data_dir, _split(len(FlexDataset(data_dir)), cfg.get("heldout_every", 10))[1])
    for name in ("metrics.jsonl", "command.json", "RECIPE.md"):
        if (ASSET_DIR / name).exists():
            shutil.copy(ASSET_DIR / name, tmp / name)
    tmp.rename(model_dir)
    return model_dir


def install_exported_model(src: Path, model_dir: Path, data_dir: Path) -> Path:
    """Copy an exported model folder into `model_dir` and make it a run directory for the report: run_config.json
    (where the model came from, its index and config, the demo's data) and split.json holding out every episode
    collected here (reset seeds the model was not trained on)."""
    if (model_dir / "model_index.json").exists():
        return model_dir
    from flexwm.data import FlexDataset
    from flexwm.models.pretrained import read_index

    tmp = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    cfg = {"model": str(src.resolve()), "data": [str(data_dir)], "model_index": read_index(src),
           "world_model": json.loads((src / "world_model" / "config.json").read_text())}
    (tmp / "run_config.json").write_text(json.dumps(cfg, indent=2))
    _write_split(tmp, data_dir, list(range(len(FlexDataset(data_dir)))))
    tmp.rename(model_dir)
    return model_dir


def train_demo_model(data_dir: Path, model_dir: Path, device: str = "cpu") -> Path:
    from flexwm.training.run import run_config, train_world_model

    cfg = run_config("demo", data=[str(data_dir)], device=device)
    train_world_model(cfg, model_dir, resume=(model_dir / "checkpoints").exists(),
                      command=["flexwm", "demo", "--train"])
    return model_dir


def _print_act(name: str, task: str, r: dict) -> None:
    s, ms = r["summary"], (r["latency"]["mean_s"] or 0) * 1000
    print(f"{name:10s} {task:16s} success {s['successes']}/{s['episodes']} episodes  ({ms:.0f} ms/plan)", flush=True)


def act(model_dir: Path, setup: DemoSetup, episodes: int, policies: list[str], device: str = "cpu") -> list[dict]:
    """Each way to act on each of the setup's tasks in the real simulator, with held-out instructions, into
    MODEL/eval-NAME.json (`flexwm eval`'s format; written after every task, so a rerun resumes); the first
    episode's real frames and the model's imagined plans are kept as a video for the report."""
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.evaluation.stats import success_summary
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json, plain_json
    from flexwm.planning import make_policy
    from flexwm.report import save_eval_videos

    wm = load_run(model_dir, steps=4, device=device)
    rows = []
    for name in policies:
        out = model_dir / f"eval-{name}.json"
        res = json.loads(out.read_text()) if out.exists() else {}
        if res.get("episodes_per_task") != episodes:
            res = {}
        per_task: dict[str, Any] = res.get("per_task", {})
        seconds = res.get("seconds", 0.0)
        pol = make_policy(name, wm, budget=setup.budget)
        for task in setup.act_tasks:
            if task in per_task:
                _print_act(name, task, per_task[task])
                continue
            t0 = time.perf_counter()
            r = evaluate_policy(pol, "metaworld", task, episodes, seed=10_000, max_steps=MAX_STEPS,
                                instruction_split="eval", record_video=1)
            save_eval_videos(model_dir, name, task, r.pop("videos"))
            per_task[task] = r
            seconds += time.perf_counter() - t0
            _print_act(name, task, r)
            done = [t for t in setup.act_tasks if t in per_task]
            rates = [per_task[t]["summary"]["rate"] for t in done]
            res = {"policy": name, "env": "metaworld", "tasks": done, "episodes_per_task": episodes,
                   "seed": 10_000, "max_steps": MAX_STEPS, "instructions": "eval", "flow_steps": 4,
                   "policy_overrides": f"{setup.budget} budget", "complete": len(done) == len(setup.act_tasks),
                   "average_over_tasks": sum(rates) / len(rates),
                   "pooled": success_summary([f for t in done for f in per_task[t]["success"]]),
                   "per_task": per_task, "seconds": seconds}
            atomic_write_json(out, plain_json(res))
        rows.append(res)
    return rows


def policy_evaluation(model_dir: Path, setup: DemoSetup, episodes: int, device: str = "cpu") -> dict:
    """The setup's suite (experts, noisy experts, random) in the simulator and in the model, into
    MODEL/policy-eval-TASK/; prints each policy's real and imagined success and the correlation in words."""
    from flexwm.evaluation.policy_eval import describe_correlation, evaluate_suite
    from flexwm.inference import load_run

    out = model_dir / f"policy-eval-{setup.suite_task}"
    if (out / "policy_eval.json").exists():
        res = json.loads((out / "policy_eval.json").read_text())
    else:
        wm = load_run(model_dir, steps=4, device=device)
        res = evaluate_suite({"policies": list(setup.suite)}, wm, "metaworld", setup.suite_task, episodes=episodes,
                             seed=20_000, horizon=setup.horizon, out_dir=out)
    for p in res["policies"]:
        real, imag = p["real"], p["imagined"]
        print(f"{p['name']:12s} real {real['successes']}/{real['episodes']}  imagined {imag['successes']}/"
              f"{imag['episodes']}  imagined mean max P(success) {p['imagined_mean_max_prob']:.2f}  "
              f"({p['imagination']})", flush=True)
    print(f"policy evaluation on {setup.suite_task}: {describe_correlation(res)}", flush=True)
    return res


def _claim(out: Path, setup: DemoSetup, source: Path | None, train: bool) -> None:
    """Record which model OUT belongs to; refuse to resume a demo made with another one."""
    mine = {"model": "trained here (--train)" if train else setup.name,
            "source": str(source.resolve()) if source else str(ASSET_DIR)}
    path = out / "demo.json"
    if path.exists() or (out / "model").exists():
        # no demo.json but a model: made by an earlier flexwm, which had only the tiny model (or --train)
        theirs = json.loads(path.read_text()) if path.exists() else {"model": mine["model"] if train else "tiny"}
        if theirs.get("model") != mine["model"]:
            raise ConfigError(f"{out} holds a demo made with model {theirs.get('model')!r}, not {mine['model']!r}; "
                              "choose another --out or delete it")
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**mine, "setup": asdict(setup)}, indent=2))


def run_demo(out: str | Path = "runs/demo", *, model: str | Path = "auto", train: bool = False,
             episodes: int | None = None, workers: int = 2, eval_episodes: int | None = None,
             suite_episodes: int | None = None, policies: list[str] | None = None, device: str = "cpu") -> Path:
    """Run every stage into `out` and return the report's path. `model`: auto | tiny | an exported folder (see
    the module docstring); None arguments take the setup's values."""
    from flexwm.collect import collect
    from flexwm.config import check_device
    from flexwm.report import build_report

    check_device(device)
    setup, source = resolve_model(model, train)
    out = Path(out)
    _claim(out, setup, source, train)
    t0 = time.perf_counter()
    data_dir, model_dir = out / "data", out / "model"
    cfg = collect_config(setup, episodes, workers)
    _stage(f"1/5 collect {len(setup.tasks)} Meta-World tasks x (expert, noisy {setup.noise:g}, play) x {cfg.episodes} "
           f"episodes (reset seeds from {setup.collect_seed})")
    collect(cfg, data_dir, resume=True)
    if train:
        _stage("2/5 train the demo model (--train)")
        train_demo_model(data_dir, model_dir, device)
    elif source is None:
        _stage(f"2/5 install the tiny demo checkpoint shipped in flexwm ({ASSET_DIR})")
        install_tiny_model(model_dir, data_dir)
    else:
        _stage(f"2/5 install the model {source}")
        install_exported_model(source, model_dir, data_dir)
    eval_episodes = eval_episodes or setup.eval_episodes
    _stage(f"3/5 act in the real simulator on {', '.join(setup.act_tasks)}: {eval_episodes} episodes per task and "
           "way to act, held-out instructions")
    act(model_dir, setup, eval_episodes, policies or list(setup.policies), device)
    suite_episodes = suite_episodes or setup.suite_episodes
    _stage(f"4/5 policy evaluation on {setup.suite_task}: {len(setup.suite)} policies x {suite_episodes} episodes "
           "in the simulator and in the model")
    policy_evaluation(model_dir, setup, suite_episodes, device)
    _stage("5/5 report")
    path = build_report(model_dir, out / "report.html", rollouts=3, results=[], device=device)
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

Trained by flexwm itself on the data `flexwm demo --model tiny` collects
({len(TASKS)} Meta-World tasks: {", ".join(TASKS)};
expert, noisy (noise 1.0) and play episodes, 4 per task and source, 150 steps, reset seeds from 0):

    make demo-checkpoint
    # = flexwm demo --train --out runs/demo-train  (collect, then `train` with the demo preset)
    #   flexwm export-demo runs/demo-train/model

Preset `demo` (flexwm/training/run.py), {steps} steps; weights stored in float16 (the model runs in float32).
Full resolved config: config.json. Training curves: metrics.jsonl. Torch {torch.__version__}.
""")
    return dest
