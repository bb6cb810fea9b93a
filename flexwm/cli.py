"""The `flexwm` command line. It wires the library's parts together; nothing in the library imports it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from flexwm.errors import ConfigError, FlexWMError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="flexwm: one flexibly conditioned robot world model.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect, preview and verify datasets.")
app.add_typer(data_app, name="data")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


@app.command()
def tasks(env: str = typer.Option("metaworld", help="metaworld | pusht")) -> None:
    """List the task names of a simulator, with their canonical instructions."""
    from flexwm.envs import list_tasks
    from flexwm.envs.instructions import canonical_instruction

    for t in list_tasks(env):
        typer.echo(f"{t:32s} {canonical_instruction(t)}")


@app.command()
def collect(
    env: str = typer.Option("metaworld", help="metaworld | pusht"),
    tasks: str = typer.Option("reach-v3", help="comma-separated task names, or 'avdc' for the 11 AVDC tasks"),
    source: str = typer.Option("expert", help="comma-separated: expert, noisy, play"),
    episodes: int = typer.Option(10, help="episodes per task, source and noise level"),
    noise: str = typer.Option("0.3", help="comma-separated noise levels for the noisy source"),
    out: Path = typer.Option(..., help="dataset directory (LeRobot v3 layout)"),
    image_size: int = typer.Option(64, help="square camera image size"),
    camera: str | None = typer.Option(None, help="camera name (Meta-World)"),
    max_steps: int | None = typer.Option(None, help="episode length limit"),
    seed: int = typer.Option(0, help="first reset seed"),
    workers: int = typer.Option(1, help="worker processes"),
    resume: bool = typer.Option(False, "--resume", help="continue (or extend) an existing dataset"),
) -> None:
    """Collect expert, noisy-expert and play episodes from the real simulator into a dataset."""
    from flexwm.collect import CollectConfig
    from flexwm.collect import collect as run_collect
    from flexwm.envs import AVDC_TASKS

    task_list = list(AVDC_TASKS) if tasks == "avdc" else _split(tasks)
    try:
        noise_levels = [float(n) for n in _split(noise)]
    except ValueError:
        raise FlexWMError(f"--noise must be comma-separated numbers, got {noise!r}") from None
    cfg = CollectConfig(env=env, tasks=task_list, sources=_split(source), episodes=episodes, noise=noise_levels,
                        image_size=image_size, camera=camera, max_steps=max_steps, seed=seed, workers=workers)
    summary = run_collect(cfg, out, resume=resume)
    _echo_json(summary)


@data_app.command("info")
def data_info(root: Path = typer.Argument(..., help="dataset directory"),
              as_json: bool = typer.Option(False, "--json", help="print JSON"),
              camera: str | None = typer.Option(None, help="camera to read when the dataset has several"),
              outcome: str | None = typer.Option(None, help="outcome of unlabelled episodes: unlabelled | success-column | last-frame | success")) -> None:
    """Episodes by task, outcome, source and embodiment."""
    from flexwm.data.inspect import dataset_info, format_info

    info = dataset_info(root, camera=camera, outcome=outcome)
    if as_json:
        _echo_json(info)
    else:
        typer.echo(format_info(info))


@data_app.command("preview")
def data_preview(root: Path = typer.Argument(..., help="dataset directory"),
                 out: Path | None = typer.Option(None, help="output mp4 (default ROOT/preview.mp4)"),
                 episodes: int = typer.Option(16, help="episodes in the grid"),
                 camera: str | None = typer.Option(None, help="camera to read when the dataset has several"),
                 outcome: str | None = typer.Option(None, help="outcome of unlabelled episodes: unlabelled | success-column | last-frame | success")) -> None:
    """Write a video grid of episodes."""
    from flexwm.data.inspect import write_preview

    out = out or Path(root) / "preview.mp4"
    write_preview(root, out, n_episodes=episodes, camera=camera, outcome=outcome)
    typer.echo(f"wrote {out}")


@data_app.command("verify")
def data_verify(root: Path = typer.Argument(..., help="dataset directory"),
                camera: str | None = typer.Option(None, help="camera to read when the dataset has several")) -> None:
    """Decode and check every episode; exit 1 if any is damaged."""
    from flexwm.data import verify

    report = verify(root, camera=camera)
    _echo_json(report if isinstance(report, dict) else {"report": str(report)})
    if isinstance(report, dict) and report.get("damaged"):
        raise typer.Exit(1)


@app.command()
def train(
    data: list[Path] = typer.Option(..., help="dataset directory (repeat --data for several)"),
    out: Path = typer.Option(..., help="run directory"),
    preset: str = typer.Option("cpu", help="tiny | cpu | gpu"),
    variant: str = typer.Option("flexible", help="flexible | wam-only | ac-only"),
    config: Path | None = typer.Option(None, help="JSON/YAML file with RunConfig fields"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. --set train.steps=500 (repeatable)"),
    steps: int | None = typer.Option(None, help="shortcut for --set train.steps=N"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    camera: str | None = typer.Option(None, help="camera to read from datasets that have several"),
    outcome: str | None = typer.Option(None, help="outcome of episodes without flexwm labels: unlabelled | "
                                       "success-column | last-frame | success"),
    resize: int | None = typer.Option(None, help="scale frames to this square size (e.g. 64 for 480x640 data)"),
) -> None:
    """Train the flexible world model (or an ablation variant) on one or more datasets."""
    import yaml

    from flexwm.config import apply_overrides, to_dict
    from flexwm.training.run import RunConfig, train_world_model
    from flexwm.training.run import preset as run_preset

    overrides: dict = {"data": [str(d) for d in data], "model": {"variant": variant},
                       **{k: v for k, v in (("camera", camera), ("outcome", outcome), ("resize", resize))
                          if v is not None}}
    if config is not None:
        file_cfg = yaml.safe_load(config.read_text()) or {}
        if not isinstance(file_cfg, dict):
            raise FlexWMError(f"{config} must hold a mapping of RunConfig fields")
        overrides = {**file_cfg, **overrides, "model": {**file_cfg.get("model", {}), "variant": variant}}
    cfg: RunConfig = run_preset(preset, **overrides)
    extra = list(set_) + ([f"train.steps={steps}"] if steps is not None else [])
    if extra:
        cfg = apply_overrides(cfg, extra)
    path = train_world_model(cfg, out, resume=resume, command=["flexwm", *sys.argv[1:]])
    _echo_json({"checkpoint": str(path), "steps": to_dict(cfg)["train"]["steps"], "out": str(out)})


@app.command("train-bc")
def train_bc_cmd(
    data: Path = typer.Option(..., help="dataset directory (its success episodes are the demonstrations)"),
    out: Path = typer.Option(..., help="output directory (model.safetensors, config.json, train_info.json)"),
    preset: str = typer.Option("cpu", help="tiny | cpu | gpu (sized like the world-model preset of that name)"),
    steps: int = typer.Option(4000, help="optimizer steps"),
    batch_size: int = typer.Option(32, help="samples per step (4000 x 32 = the cpu world model's sample budget)"),
    lr: float = typer.Option(3e-4, help="AdamW learning rate"),
    heldout_every: int = typer.Option(10, help="skip every k-th episode, as flexwm train holds them out (0: use all)"),
    max_demos: int | None = typer.Option(None, help="use only the first N success episodes (few-shot baselines)"),
    seed: int = typer.Option(0, help="initialisation and sampling seed"),
    no_proprio: bool = typer.Option(False, "--no-proprio", help="images and instruction only (for RL in imagination)"),
    save_at: str = typer.Option("", help="comma-separated steps at which to also save OUT/step-N snapshots "
                                         "(policies of graded quality for evaluate-policies suites)"),
) -> None:
    """Train the behaviour-cloning baseline (no world model) on a dataset's successes; evaluate it with
    flexwm eval --policy bc --ckpt OUT."""
    import time

    from flexwm.data import FlexDataset
    from flexwm.io import atomic_write_json
    from flexwm.planning.bc import train_bc

    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a BC model; choose another --out or remove it")
    ds = FlexDataset(data)
    idx = [i for i in range(len(ds)) if heldout_every < 2 or i % heldout_every != heldout_every - 1]
    idx = [i for i in idx if ds.episodes[i]["outcome"] == "success"]
    if max_demos is not None:
        idx = idx[:max_demos]
    try:
        snapshots = sorted({int(x) for x in _split(save_at)})
    except ValueError:
        raise ConfigError(f"--save-at {save_at!r} must be comma-separated step numbers, e.g. 100,500") from None
    if any(not 1 <= k <= steps for k in snapshots):
        raise ConfigError(f"--save-at steps {snapshots} must lie between 1 and --steps {steps}")

    def on_step(step: int, model) -> None:
        if step in snapshots:
            model.eval()
            model.save_pretrained(out / f"step-{step:06d}")
            model.train()

    start = time.perf_counter()
    model, info = train_bc(ds, preset, episodes=idx, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                           progress=True, use_proprio=not no_proprio, on_step=on_step if snapshots else None)
    model.save_pretrained(out)
    losses = info.pop("losses")
    first, last = losses[:50], losses[-50:]
    summary = {"out": str(out), "episodes": info["episodes"], "parameters": info["parameters"],
               "loss_last_50": float(sum(last) / max(1, len(last)))}
    atomic_write_json(out / "train_info.json", {
        **info, "data": str(data), "preset": preset, "steps": steps, "batch_size": batch_size, "lr": lr,
        "seed": seed, "use_proprio": not no_proprio, "train_episodes": idx, "wall_s": time.perf_counter() - start,
        "loss_first_50": float(sum(first) / max(1, len(first))), "loss_last_50": summary["loss_last_50"],
        "snapshots": [f"step-{k:06d}" for k in snapshots], "losses": losses[::10], "command": " ".join(["flexwm", *sys.argv[1:]])})
    _echo_json(summary)


@app.command("eval")
def eval_(
    ckpt: Path = typer.Option(..., help="training run (or checkpoint) directory"),
    env: str = typer.Option("metaworld", help="metaworld | pusht"),
    tasks: str = typer.Option("avdc", help="comma-separated task names, or 'avdc'"),
    policy: str = typer.Option("wam", help="wam | wam-seq | best-of-n | cem | mppi | grad | hybrid | wam-steered (--set noise_policy=DIR) | random | bc (--ckpt: a flexwm train-bc directory)"),
    episodes: int = typer.Option(10, help="episodes per task (reset seeds seed, seed+1, ...)"),
    seed: int = typer.Option(10_000, help="first reset seed (training data used seeds from 0)"),
    max_steps: int | None = typer.Option(None, help="episode length limit"),
    instructions: str = typer.Option("eval", help="instruction split: eval (held out) | train | canonical"),
    budget: str = typer.Option("auto", help="planning budget: default (accelerator) | cpu (about 1 s per CEM plan "
                                            "on 2 cores) | tiny | auto (cpu on a CPU)"),
    flow_steps: int | None = typer.Option(None, help="flow sampler steps (default 4 with --budget cpu, else 10)"),
    ac_noise: str = typer.Option("sample", help="action-conditioned rollouts: sample | zero (deterministic)"),
    ac_guidance: float = typer.Option(1.0, help="> 1: imagined futures follow the actions more (2 model calls)"),
    device: str = typer.Option("cpu", help="cpu | cuda (the world model's device)"),
    set_: list[str] = typer.Option([], "--set", help="policy config override, e.g. --set population=32"),
    out: Path | None = typer.Option(None, help="JSON result file (default CKPT/eval-POLICY.json)"),
    resume: bool = typer.Option(False, help="keep the tasks already finished in --out and run the rest"),
    videos: int = typer.Option(0, help="episodes per task saved as real | imagined-plan videos for the report"),
) -> None:
    """Evaluate a policy built on a trained model in the real simulator: success with 95% CIs and latency.

    The result file is rewritten (atomically) after every task, so an interrupted evaluation resumes with
    --resume; each task's policy and reset seeds depend only on the task, so resumed == uninterrupted."""
    import numpy as np
    import torch
    import yaml

    from flexwm.envs import AVDC_TASKS
    from flexwm.evaluation.stats import success_summary
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json
    from flexwm.planning import BUDGETS, make_policy
    from flexwm.planning.evaluate import evaluate_policy

    if budget == "auto":
        budget = "cpu" if device == "cpu" else "default"
    if budget not in BUDGETS:
        raise ConfigError(f"--budget {budget!r} is not a planning budget; choose auto or one of {list(BUDGETS)}")
    if device != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for but this machine has no GPU (torch.cuda.is_available() "
                          "is False); use --device cpu (the default)")
    flow_steps = flow_steps if flow_steps is not None else (4 if budget == "cpu" else 10)
    bc_model = None
    if policy == "bc":
        from flexwm.planning import BCModel

        wm, bc_model = None, BCModel.from_pretrained(ckpt)
    else:
        from flexwm.envs import EMBODIMENTS

        wm = load_run(ckpt, steps=flow_steps, ac_noise=ac_noise, ac_guidance=ac_guidance, device=device,
                      prefer_embodiment=EMBODIMENTS.get(env))
    cfg = {}
    for item in set_:
        key, _, raw = item.partition("=")
        cfg[key] = yaml.safe_load(raw)
    task_list = list(AVDC_TASKS) if tasks == "avdc" else _split(tasks)
    out = out or Path(ckpt) / f"eval-{policy}.json"
    setup = {"ckpt": str(ckpt), "policy": policy, "env": env, "episodes_per_task": episodes, "seed": seed,
             "max_steps": max_steps, "instructions": instructions, "flow_steps": flow_steps, "policy_overrides": cfg,
             "ac_noise": ac_noise, "budget": budget, "ac_guidance": ac_guidance}
    per_task: dict = {}
    if out.exists() and not resume:
        raise ConfigError(f"{out} exists; pass --resume to finish that evaluation, or choose another --out")
    if out.exists():
        try:
            old = json.loads(out.read_text())
        except ValueError as e:
            raise ConfigError(f"{out} is not a readable result file ({e}); remove it or choose another --out") from e
        differs = sorted(k for k, v in setup.items() if json.loads(json.dumps(old.get(k), default=_jsonable))
                         != json.loads(json.dumps(v, default=_jsonable)))
        if differs:
            raise ConfigError(f"{out} was made with other settings ({differs} differ); use the same options to "
                              "resume, or choose another --out")
        per_task = {t: r for t, r in old.get("per_task", {}).items() if t in task_list}
        if per_task:
            typer.echo(f"resuming: {len(per_task)} of {len(task_list)} tasks already done in {out}")

    def write(done: bool) -> dict:
        rates = [r["summary"]["rate"] for r in per_task.values()]
        flags = [f for r in per_task.values() for f in r["success"]]
        result = {**setup, "complete": done, "tasks": task_list,
                  "average_over_tasks": float(np.mean(rates)) if rates else None,
                  "pooled": success_summary(flags), "per_task": per_task, "command": " ".join(sys.argv)}
        atomic_write_json(out, json.loads(json.dumps(result, default=_jsonable)))
        return result

    for task in task_list:
        if task in per_task:
            continue
        pol = make_policy(policy, wm, cfg or None, bc_model=bc_model, preset=budget)
        r = evaluate_policy(pol, env, task, episodes, seed=seed, max_steps=max_steps, instruction_split=instructions,
                            record_video=videos)
        recorded = r.pop("videos", None)
        if recorded:
            from flexwm.report import save_eval_videos
            from flexwm.training.checkpoint import resolve_run_dir

            save_eval_videos(resolve_run_dir(ckpt), policy, task, recorded)
        per_task[task] = json.loads(json.dumps(r, default=_jsonable))
        s = r["summary"]
        typer.echo(f"{task:28s} {s['successes']:3d}/{s['episodes']:<3d} {s['rate']:.0%}  CI95 "
                   f"[{s['ci95'][0]:.0%}, {s['ci95'][1]:.0%}]  {r['latency']['mean_s'] or 0:.3f} s/plan"
                   + (f"  mean max coverage {r['mean_max_coverage']:.1%}" if "mean_max_coverage" in r else ""))
        write(False)
    result = write(True)
    typer.echo(f"average over tasks {result['average_over_tasks']:.1%}; wrote {out}")


@app.command()
def improve(
    bc: Path = typer.Option(..., help="a flexwm train-bc --no-proprio directory: the policy to improve"),
    task: str = typer.Option(..., help="task name (start states come from its simulator)"),
    out: Path = typer.Option(..., help="output directory: the improved BC model and improve_log.json"),
    ckpt: Path | None = typer.Option(None, help="world-model run to train in (imagination)"),
    real: bool = typer.Option(False, "--real", help="train in the real simulator instead (same algorithm)"),
    env: str = typer.Option("metaworld", help="metaworld | pusht"),
    flow_steps: int = typer.Option(4, help="flow sampler steps of the imagined rollouts"),
    data: Path | None = typer.Option(None, help="with --set start=dataset: branch from this dataset's frames of "
                                                "the task (the run's held-out episodes excluded)"),
    set_: list[str] = typer.Option([], "--set", help="ImproveConfig override, e.g. --set iterations=8"),
) -> None:
    """Improve a behaviour-cloning policy by RL in imagination (positive-advantage weighted regression on
    batched imagined rollouts scored by the success head), or in the real simulator with --real.
    `--set start=dataset --set reward=progress --data DATA`: short imagined branches from real dataset frames."""
    from flexwm.config import apply_overrides
    from flexwm.io import atomic_write_json
    from flexwm.planning import BCModel
    from flexwm.rl.improve import ImproveConfig, improve_bc

    if (ckpt is None) == (not real):
        raise ConfigError("give --ckpt RUN (train in imagination) or --real (train in the simulator), not both")
    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a model; choose another --out or remove it")
    cfg = apply_overrides(ImproveConfig(), list(set_)) if set_ else ImproveConfig()
    policy = BCModel.from_pretrained(bc)
    wm = None
    if ckpt is not None:
        from flexwm.inference import load_run

        wm = load_run(ckpt, steps=flow_steps)
    kw = {}
    if cfg.start == "dataset":
        if data is None or ckpt is None:
            raise ConfigError("--set start=dataset needs --ckpt RUN and --data DATA (the frames to branch from)")
        from flexwm.data import FlexDataset
        from flexwm.training.checkpoint import run_heldout

        ds = FlexDataset(data)
        try:
            held = set(run_heldout(ckpt, data, "improve --set start=dataset")[1])
        except ConfigError:
            held = set()  # a dataset the run was not trained on: every episode is new to it
        kw = {"dataset": ds, "episodes": [i for i, e in enumerate(ds.episodes) if e["env_task"] == task
                                          and i not in held]}
        if not kw["episodes"]:
            raise ConfigError(f"{data} has no episodes of task {task!r} to branch from")
    model, log = improve_bc(policy, task, cfg, wm=wm, env_name=env, progress=True, **kw)
    model.save_pretrained(out)
    atomic_write_json(out / "improve_log.json", json.loads(json.dumps(
        {**log, "bc": str(bc), "ckpt": None if ckpt is None else str(ckpt), "command": " ".join(sys.argv)},
        default=_jsonable)))
    _echo_json({"out": str(out), "mean_return_per_iteration": [r["mean_return"] for r in log["iterations"]],
                "wall_s": log["wall_s"]})


@app.command("steer-wam")
def steer_wam_cmd(
    ckpt: Path = typer.Option(..., help="world-model run: its WAM is steered (and its AC mode imagines)"),
    task: str = typer.Option(..., help="task name (start states come from its simulator)"),
    out: Path = typer.Option(..., help="output directory for the noise policy (model.safetensors, config.json)"),
    real: bool = typer.Option(False, "--real", help="learn from real-simulator rollouts instead of imagined ones"),
    env: str = typer.Option("metaworld", help="metaworld | pusht"),
    flow_steps: int = typer.Option(4, help="flow sampler steps (WAM and imagined rollouts)"),
    set_: list[str] = typer.Option([], "--set", help="NoiseRLConfig override, e.g. --set iterations=5"),
) -> None:
    """Learn a noise policy that steers the WAM mode's initial action noise by RL (latent-space RL; the model's
    weights stay frozen). Evaluate it with benchmarks/steer_wam.py or flexwm.rl.noise_rl.steered_wam_policy."""
    from flexwm.config import apply_overrides
    from flexwm.envs import EMBODIMENTS
    from flexwm.inference import load_run
    from flexwm.rl.noise_rl import NoiseRLConfig, steer_wam

    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a noise policy; choose another --out or remove it")
    cfg = apply_overrides(NoiseRLConfig(), list(set_)) if set_ else NoiseRLConfig()
    wm = load_run(ckpt, steps=flow_steps, prefer_embodiment=EMBODIMENTS.get(env))
    pol, log = steer_wam(wm, task, cfg, imagine=not real, env_name=env, progress=True)
    pol.save_pretrained(out, json.loads(json.dumps({"log": log, "run": str(ckpt), "command": " ".join(sys.argv)},
                                                   default=_jsonable)))
    _echo_json({"out": str(out), "mean_return_per_iteration": [r["mean_return"] for r in log["iterations"]],
                "wall_s": log["wall_s"]})


@app.command("evaluate-policies")
def evaluate_policies(
    ckpt: Path = typer.Option(..., help="training run (or checkpoint) directory: the world model"),
    suite: Path = typer.Option(..., help="suite YAML (see examples/suite.yaml)"),
    env: str = typer.Option("metaworld", help="metaworld | pusht"),
    task: str = typer.Option(..., help="task name"),
    episodes: int = typer.Option(10, help="episodes per policy, same initial states in both worlds"),
    seed: int = typer.Option(10_000, help="first reset seed"),
    horizon: int | None = typer.Option(None, help="steps per episode (default: the env's limit)"),
    flow_steps: int = typer.Option(4, help="flow sampler steps of the world model"),
    ac_noise: str = typer.Option("sample", help="imagined rollouts: sample | zero (deterministic)"),
    ac_guidance: float = typer.Option(1.0, help="> 1: imagined futures follow the actions more (2 model calls)"),
    success_threshold: str = typer.Option("0.5", help="imagined P(success) that counts as success, or "
                                                      "'calibrated' (from flexwm calibrate: CKPT/imagined_calibration.json)"),
    out: Path | None = typer.Option(None, help="output directory (default CKPT/policy-eval-TASK)"),
) -> None:
    """Run each policy of a suite in the real simulator and in the world model; report success per policy,
    Pearson, Spearman and MMRV, and a scatter plot."""
    from flexwm.evaluation.policy_eval import evaluate_suite
    from flexwm.inference import load_run

    threshold = _threshold(success_threshold, ckpt, flow_steps)
    wm = load_run(ckpt, steps=flow_steps, ac_noise=ac_noise, ac_guidance=ac_guidance)
    out = out or Path(ckpt) / f"policy-eval-{task}"
    res = evaluate_suite(suite, wm, env, task, episodes=episodes, seed=seed, horizon=horizon, out_dir=out,
                         success_threshold=threshold)
    for p in res["policies"]:
        typer.echo(f"{p['name']:16s} real {p['real']['rate']:.0%}  imagined {p['imagined']['rate']:.0%}  "
                   f"({p['imagination']})")
    stats = {k: res.get(k) for k in ("pearson", "spearman", "mmrv")}
    typer.echo(json.dumps(stats) + f"\nwrote {out}")


def _threshold(text: str, ckpt: Path, flow_steps: int) -> float:
    """A number in [0, 1], or 'calibrated': the threshold `flexwm calibrate` stored next to the run."""
    from flexwm.training.checkpoint import resolve_run_dir

    if text != "calibrated":
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--success-threshold {text!r} must be a number in [0, 1] or 'calibrated'")
        return value
    path = resolve_run_dir(ckpt) / "imagined_calibration.json"
    if not path.exists():
        raise ConfigError(f"--success-threshold calibrated needs {path}; make it with flexwm calibrate --ckpt {ckpt}")
    cal = json.loads(path.read_text())
    if cal.get("flow_steps") != flow_steps:
        raise ConfigError(f"{path} was calibrated with {cal.get('flow_steps')} flow steps, not --flow-steps "
                          f"{flow_steps}; use the same or calibrate again")
    return float(cal["threshold"])


@app.command()
def calibrate(
    ckpt: Path = typer.Option(..., help="training run directory: the world model"),
    data: Path | None = typer.Option(None, help="dataset (default: the run's first); its held-out episodes are used"),
    tasks: str = typer.Option("", help="comma-separated tasks to use (default: all)"),
    max_episodes: int = typer.Option(128, help="at most this many held-out episodes"),
    horizon: int | None = typer.Option(None, help="steps replayed per episode (default: the whole episode)"),
    flow_steps: int = typer.Option(4, help="flow sampler steps (use the same for evaluate-policies)"),
    ac_noise: str = typer.Option("sample", help="imagined rollouts: sample | zero"),
    seed: int = typer.Option(0, help="imagination noise seed"),
) -> None:
    """Replay held-out episodes in imagination and pick the imagined-success threshold that best separates
    their real outcomes; writes CKPT/imagined_calibration.json (threshold, balanced accuracy, ROC AUC)."""
    from flexwm.data import FlexDataset
    from flexwm.evaluation.calibrate import calibrate_imagined_success
    from flexwm.inference import load_run
    from flexwm.io import atomic_write_json
    from flexwm.training.checkpoint import resolve_run_dir, run_heldout

    run = resolve_run_dir(ckpt)
    data, held = run_heldout(run, data, "calibrate")
    ds = FlexDataset(data)
    wanted = set(_split(tasks))
    idx = [i for i in held if not wanted or ds.episodes[i]["env_task"] in wanted][:max_episodes]
    if not idx:
        raise ConfigError(f"no held-out episodes of tasks {sorted(wanted)} in {data}")
    wm = load_run(ckpt, steps=flow_steps, ac_noise=ac_noise)
    res = calibrate_imagined_success(wm, [ds.load_episode(i) for i in idx], horizon=horizon, seed=seed)
    res.update({"ckpt": str(ckpt), "data": str(data), "episode_indices": idx, "flow_steps": flow_steps,
                "ac_noise": ac_noise, "command": " ".join(["flexwm", *sys.argv[1:]])})
    atomic_write_json(run / "imagined_calibration.json", res)
    _echo_json({k: res[k] for k in ("threshold", "balanced_accuracy", "balanced_accuracy_at_0.5", "auc",
                                    "n_success", "n_failure")} | {"wrote": str(run / "imagined_calibration.json")})


@app.command("tune-head")
def tune_head(
    ckpt: Path = typer.Option(..., help="training run directory: the world model"),
    out: Path = typer.Option(..., help="new checkpoint directory for the model with the re-fitted head"),
    data: Path | None = typer.Option(None, help="dataset (default: the run's first); its training episodes are used"),
    max_episodes: int = typer.Option(384, help="at most this many training episodes, shared evenly by outcome"),
    horizon: int | None = typer.Option(None, help="steps replayed per episode (default: the whole episode)"),
    flow_steps: int = typer.Option(4, help="flow sampler steps of the imagined rollouts (use the same later)"),
    ac_noise: str = typer.Option("sample", help="imagined rollouts: sample | zero"),
    seed: int = typer.Option(0, help="episode choice and imagination noise seed"),
) -> None:
    """Re-fit the success head on the model's own imagined futures of training episodes (real outcomes as labels);
    writes a checkpoint to OUT with only the success row of the head changed, and OUT/head_tuning.json."""
    import numpy as np

    from flexwm.data import FlexDataset
    from flexwm.evaluation.imagined_head import tune_success_head
    from flexwm.training.checkpoint import run_heldout

    data, held = run_heldout(ckpt, data, "tune-head")
    ds = FlexDataset(data)
    held_set = set(held)
    by_outcome: dict[str, list[int]] = {}
    for i in range(len(ds)):
        if i not in held_set:
            by_outcome.setdefault(ds.episodes[i]["outcome"], []).append(i)
    rng = np.random.default_rng(seed)
    pools = {o: list(rng.permutation(v)) for o, v in sorted(by_outcome.items())}
    idx: list[int] = []
    while len(idx) < max_episodes and any(pools.values()):  # round-robin over outcomes: balanced where possible
        for pool in pools.values():
            if pool and len(idx) < max_episodes:
                idx.append(int(pool.pop()))
    res = tune_success_head(ckpt, out, [ds.load_episode(i) for i in sorted(idx)], flow_steps=flow_steps,
                            ac_noise=ac_noise, horizon=horizon, seed=seed, progress=True,
                            command=" ".join(["flexwm", *sys.argv[1:]]))
    _echo_json({k: res[k] for k in ("episodes", "windows", "positive_windows", "l2", "validation", "train_fit")}
               | {"wrote": str(out)})


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output directory"),
         train: bool = typer.Option(False, help="train the demo model here instead of using the shipped one"),
         episodes: int = typer.Option(4, help="episodes collected per task and source"),
         eval_episodes: int = typer.Option(3, help="real-simulator episodes per way to act"),
         workers: int = typer.Option(2, help="collection worker processes")) -> None:
    """Everything in one command on a CPU: collect, model, act (wam, best-of-n, cem, hybrid), evaluate policies,
    and write OUT/report.html. Resumes: a rerun skips finished stages."""
    from flexwm.demo import run_demo

    run_demo(out, train=train, episodes=episodes, workers=workers, eval_episodes=eval_episodes)


@app.command("export-demo", hidden=True)
def export_demo(run: Path = typer.Argument(..., help="a training run of the demo preset")) -> None:
    """Write a run's latest checkpoint (fp16) and tokenizer into flexwm/assets/demo (maintainers)."""
    from flexwm.demo import export_demo_checkpoint

    typer.echo(f"wrote {export_demo_checkpoint(run)}")


@app.command()
def report(run: Path = typer.Argument(..., help="training run directory"),
           out: Path | None = typer.Option(None, help="HTML file (default RUN/report.html)"),
           rollouts: int = typer.Option(3, help="held-out episodes shown as real vs imagined videos (0 = none)")
           ) -> None:
    """Rebuild the offline HTML report of a run from its saved results (config, curves, evals, videos)."""
    from flexwm.report import build_report

    path = build_report(run, out, rollouts=rollouts)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    """Console entry point: library errors become one clear message and exit code 2, not a traceback."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except FlexWMError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted: completed episodes and checkpoints are kept; rerun with --resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
