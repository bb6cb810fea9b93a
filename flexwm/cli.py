"""The `flexwm` command line: each command builds a config and calls one library function.

Shared option names mean the same everywhere: `--ckpt` a model (a training run, a checkpoint or an exported
folder), `--task` one task or a comma-separated list (`--tasks` is accepted too), `--device` where a model runs,
`--seed`, `--out`, `--flow-steps`, and `--set key=value` (dotted keys nest, values are YAML) for config overrides.
Commands that train (train, train-bc, improve, steer-wam) take `--tensorboard` (off by default). Long commands
draw progress bars on stderr when it is a terminal; TQDM_DISABLE=1 hides them.
Nothing in the library imports this module.
"""

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

# option helps shared by every command that has the option
CKPT = "model: a training run, a checkpoint directory or an exported folder (flexwm export)"
DEVICE = "cpu | cuda | cuda:N | mps: where the model runs"
SET = "config override key=value (repeatable; dotted keys nest, values are YAML), e.g. --set {example}"
ENV = "metaworld | pusht | gym:ENV_ID (any gymnasium environment; see --env-set)"
ONE_TASK = "pusht's or a gym env's one task"
ENV_SET = ("option of a gym:ENV_ID env, key=value: pixels=render|OBS_KEY|observation, proprio=OBS_KEY|"
           "none, success=INFO_KEY|terminated, instructions=TEXT|FILE, fps=N, kwargs.NAME=VALUE (gymnasium.make)")
CAMERA = "camera to read when the dataset has several"
ACTION_KEY = ("action feature to read (default: action), e.g. action.joint_positions; only for datasets flexwm "
              "did not write (any other name for a flexwm dataset is an error)")
STATE_KEY = ("proprio feature to read (default: observation.state), e.g. observation.joint_positions; only for "
             "datasets flexwm did not write (any other name for a flexwm dataset is an error)")
OUTCOME = ("outcome of episodes without flexwm labels: unlabelled (default) | success-column | last-frame | "
           "success (curated successes)")
TENSORBOARD = "also write the logged curves as TensorBoard event files to OUT/tensorboard/ (off by default)"
TENSORBOARD_DIR = "write the TensorBoard event files to this directory instead (implies --tensorboard)"


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _env_options(env: str, env_set: list[str]):
    """The GymEnvConfig of --env-set options (only for gym:ENV_ID envs)."""
    from flexwm.envs.gymnasium_env import is_gym, parse_env_options

    if env_set and not is_gym(env):
        raise ConfigError(f"--env-set configures gym:ENV_ID environments only, not --env {env}; drop it")
    return parse_env_options(env_set)


def _tasks(env: str, task: str | None, default: str | None) -> list[str]:
    """--task as a list of names; unset: the one task of pusht or of a gym:ENV_ID env, else `default` (None:
    --task is required)."""
    from flexwm.envs import check_env_name, expand_tasks, is_gym, list_tasks

    if task is None and (is_gym(check_env_name(env)) or env == "pusht"):
        return list_tasks(env)
    if task is None and default is None:
        raise ConfigError(f"--env {env} has several tasks: give one with --task NAME (see flexwm tasks --env {env})")
    return expand_tasks(task if task is not None else default)


def _task(env: str, task: str | None) -> str:
    """--task as one task name (unset: the one task of pusht or of a gym:ENV_ID env)."""
    return task if task is not None else _tasks(env, None, None)[0]


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _command() -> list[str]:
    return ["flexwm", *sys.argv[1:]]


def _tensorboard(flag: bool, directory: Path | None) -> bool | Path | None:
    """What a command's --tensorboard / --tensorboard-dir ask for: None (off), True (OUT/tensorboard/) or a folder."""
    return directory if directory is not None else (True if flag else None)


def _version(value: bool) -> None:
    if value:
        from flexwm import __version__

        typer.echo(f"flexwm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """flexwm: one flexibly conditioned robot world model."""


@app.command()
def tasks(env: str = typer.Option("metaworld", help=ENV),
          env_set: list[str] = typer.Option([], "--env-set", help=ENV_SET)) -> None:
    """List the task names of a simulator, with their canonical instructions."""
    from flexwm.envs import list_tasks, task_instruction

    options = _env_options(env, env_set)
    for t in list_tasks(env):
        typer.echo(f"{t:32s} {task_instruction(env, t, options)}")


@app.command()
def collect(
    env: str = typer.Option("metaworld", help=ENV),
    task: str | None = typer.Option(None, "--task", "--tasks",
                                    help=f"comma-separated task names, or 'avdc' (default: reach-v3; {ONE_TASK})"),
    source: str = typer.Option("expert", help="comma-separated: expert, noisy, play, random (a gym env has no "
                                              "expert: use play, random)"),
    episodes: int = typer.Option(10, help="episodes per task, source and noise level"),
    noise: str = typer.Option("0.3", help="comma-separated noise levels for the noisy source"),
    out: Path = typer.Option(..., help="dataset directory (LeRobot v3 layout)"),
    image_size: int = typer.Option(64, help="square camera image size"),
    camera: str | None = typer.Option(None, help="camera name (Meta-World)"),
    max_steps: int | None = typer.Option(None, help="episode length limit"),
    seed: int = typer.Option(0, help="first reset seed"),
    workers: int = typer.Option(1, help="worker processes"),
    resume: bool = typer.Option(False, "--resume", help="continue (or extend) an existing dataset"),
    env_set: list[str] = typer.Option([], "--env-set", help=ENV_SET),
    data_files_size_in_mb: float | None = typer.Option(
        None, help="a packed data file rolls over at this size (default: the dataset's own, else LeRobot's 100)"),
    video_files_size_in_mb: float | None = typer.Option(
        None, help="a packed video file rolls over at this size (default: the dataset's own, else LeRobot's 500)"),
) -> None:
    """Collect expert, noisy-expert, play and random episodes from the real simulator into a dataset."""
    from flexwm.collect import CollectConfig
    from flexwm.collect import collect as run_collect

    try:
        noise_levels = [float(n) for n in _split(noise)]
    except ValueError:
        raise FlexWMError(f"--noise must be comma-separated numbers, got {noise!r}") from None
    cfg = CollectConfig(env=env, tasks=_tasks(env, task, "reach-v3"), sources=_split(source), episodes=episodes,
                        noise=noise_levels, image_size=image_size, camera=camera, max_steps=max_steps, seed=seed,
                        workers=workers, env_options=_env_options(env, env_set),
                        data_files_size_in_mb=data_files_size_in_mb, video_files_size_in_mb=video_files_size_in_mb)
    _echo_json(run_collect(cfg, out, resume=resume))


@data_app.command("info")
def data_info(root: Path = typer.Argument(..., help="dataset directory"),
              as_json: bool = typer.Option(False, "--json", help="print JSON"),
              camera: str | None = typer.Option(None, help=CAMERA),
              outcome: str | None = typer.Option(None, help=OUTCOME),
              action_key: str | None = typer.Option(None, help=ACTION_KEY),
              state_key: str | None = typer.Option(None, help=STATE_KEY)) -> None:
    """Episodes by task, outcome, source and embodiment."""
    from flexwm.data.inspect import dataset_info, format_info

    info = dataset_info(root, camera=camera, outcome=outcome, action_key=action_key, state_key=state_key)
    typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else format_info(info))


@data_app.command("preview")
def data_preview(root: Path = typer.Argument(..., help="dataset directory"),
                 out: Path | None = typer.Option(None, help="output mp4 (default ROOT/preview.mp4)"),
                 episodes: int = typer.Option(16, help="episodes in the grid"),
                 camera: str | None = typer.Option(None, help=CAMERA),
                 outcome: str | None = typer.Option(None, help=OUTCOME),
                 action_key: str | None = typer.Option(None, help=ACTION_KEY),
                 state_key: str | None = typer.Option(None, help=STATE_KEY)) -> None:
    """Write a video grid of episodes."""
    from flexwm.data.inspect import write_preview

    out = out or Path(root) / "preview.mp4"
    if out.exists():
        raise ConfigError(f"{out} exists; pass --out NEW.mp4, or delete it to write it again")
    write_preview(root, out, n_episodes=episodes, camera=camera, outcome=outcome, action_key=action_key,
                  state_key=state_key)
    typer.echo(f"wrote {out}")


@data_app.command("verify")
def data_verify(root: Path = typer.Argument(..., help="dataset directory"),
                camera: str | None = typer.Option(None, help=CAMERA),
                action_key: str | None = typer.Option(None, help=ACTION_KEY),
                state_key: str | None = typer.Option(None, help=STATE_KEY)) -> None:
    """Decode and check every episode; exit 1 if any is damaged."""
    from flexwm.data import verify

    report = verify(root, camera=camera, action_key=action_key, state_key=state_key, progress=True)
    _echo_json(report if isinstance(report, dict) else {"report": str(report)})
    if isinstance(report, dict) and report.get("damaged"):
        raise typer.Exit(1)


@app.command()
def train(
    data: list[Path] = typer.Option(..., help="dataset directory (repeat --data for several)"),
    out: Path = typer.Option(..., help="run directory"),
    preset: str = typer.Option("cpu", help="tiny | demo | cpu | gpu"),
    variant: str | None = typer.Option(None, help="flexible | wam-only | ac-only (default: the preset's, flexible)"),
    config: Path | None = typer.Option(None, help="JSON/YAML file with RunConfig fields"),
    set_: list[str] = typer.Option([], "--set", help=SET.format(example="train.steps=500")),
    steps: int | None = typer.Option(None, help="shortcut for --set train.steps=N"),
    seed: int | None = typer.Option(None, help="shortcut for --set seed=N"),
    device: str | None = typer.Option(None, help=DEVICE + " (default: the preset's: cuda for gpu, else cpu)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    camera: str | None = typer.Option(None, help=CAMERA),
    action_key: str | None = typer.Option(None, help=ACTION_KEY),
    state_key: str | None = typer.Option(None, help=STATE_KEY),
    outcome: str | None = typer.Option(None, help=OUTCOME),
    resize: int | None = typer.Option(None, help="scale frames to this square size (e.g. 64 for 480x640 data)"),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD.replace("OUT", "--out")),
    tensorboard_dir: Path | None = typer.Option(None, help=TENSORBOARD_DIR),
) -> None:
    """Train the flexible world model (or an ablation variant) on one or more datasets."""
    from flexwm.training.run import run_config, train_world_model

    cfg = run_config(preset, data=[str(d) for d in data], variant=variant, config_file=config, overrides=set_,
                     steps=steps, seed=seed, device=device,
                     camera=camera, outcome=outcome, resize=resize, action_key=action_key, state_key=state_key)
    path = train_world_model(cfg, out, resume=resume, command=_command(),
                             tensorboard=_tensorboard(tensorboard, tensorboard_dir))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary (from rank 0)
        _echo_json({"checkpoint": str(path), "steps": cfg.train.steps, "out": str(out)})


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
    device: str = typer.Option("cpu", help=DEVICE),
    no_proprio: bool = typer.Option(False, "--no-proprio", help="images and instruction only (for RL in imagination)"),
    save_at: str = typer.Option("", help="comma-separated steps at which to also save OUT/step-N snapshots "
                                         "(policies of graded quality for evaluate-policies suites)"),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD.replace("OUT", "--out")),
    tensorboard_dir: Path | None = typer.Option(None, help=TENSORBOARD_DIR),
) -> None:
    """Train the behaviour-cloning baseline (no world model) on a dataset's successes; evaluate it with
    flexwm eval --policy bc --ckpt OUT."""
    from flexwm.planning.bc import train_bc_run

    try:
        snapshots = [int(x) for x in _split(save_at)]
    except ValueError:
        raise FlexWMError(f"--save-at {save_at!r} must be comma-separated step numbers, e.g. 100,500") from None
    _echo_json(train_bc_run(data, out, preset, steps=steps, batch_size=batch_size, lr=lr, heldout_every=heldout_every,
                            max_demos=max_demos, seed=seed, use_proprio=not no_proprio, save_at=snapshots,
                            device=device, progress=True, command=_command(),
                            tensorboard=_tensorboard(tensorboard, tensorboard_dir)))


@app.command("eval")
def eval_(
    ckpt: Path = typer.Option(..., help=CKPT + "; for --policy bc a flexwm train-bc directory"),
    env: str = typer.Option("metaworld", help=ENV),
    task: str | None = typer.Option(None, "--task", "--tasks",
                                    help=f"comma-separated task names, or 'avdc' (default: avdc; {ONE_TASK})"),
    policy: str = typer.Option("wam", help="wam | wam-seq | best-of-n | cem | mppi | grad | hybrid | wam-steered "
                                           "(--set noise_policy=DIR) | random | bc (--ckpt: a train-bc directory)"),
    episodes: int = typer.Option(10, help="episodes per task (reset seeds seed, seed+1, ...)"),
    seed: int = typer.Option(10_000, help="first reset seed (training data used seeds from 0)"),
    max_steps: int | None = typer.Option(None, help="episode length limit"),
    instructions: str = typer.Option("eval", help="instruction split: eval (held out) | train | canonical, or a JSON "
                                                  "file mapping task names to lists of instructions (episodes "
                                                  "cycle through them; success is reported per instruction)"),
    budget: str = typer.Option("auto", help="planning budget: default (accelerator) | cpu (about 1 s per CEM plan "
                                            "on 2 cores) | tiny | auto (cpu on a CPU)"),
    flow_steps: int | None = typer.Option(None, help="flow sampler steps (default 4 with --budget cpu, else 10)"),
    ac_noise: str = typer.Option("sample", help="action-conditioned rollouts: sample | zero (deterministic)"),
    ac_guidance: float = typer.Option(1.0, help="> 1: imagined futures follow the actions more (2 model calls)"),
    cfg_scale: float = typer.Option(1.0, help="> 1: classifier-free guidance on the instruction (2 model calls)"),
    device: str = typer.Option("cpu", help=DEVICE),
    set_: list[str] = typer.Option([], "--set", help=SET.format(example="population=32") + " (the policy's config)"),
    out: Path | None = typer.Option(None, help="output folder (writes OUT/eval-POLICY.json) or a .json result file; "
                                               "default runs/eval/NAME/"),
    resume: bool = typer.Option(False, help="keep the tasks already finished in --out and run the rest"),
    videos: int = typer.Option(0, help="episodes per task saved as real | imagined-plan videos for the report"),
    env_set: list[str] = typer.Option([], "--env-set", help=ENV_SET),
) -> None:
    """Evaluate a policy built on a trained model in the real simulator: success with 95% CIs and latency.

    The result file is rewritten (atomically) after every task, so an interrupted evaluation resumes with
    --resume; each task's policy and reset seeds depend only on the task, so resumed == uninterrupted."""
    from flexwm.config import parse_overrides
    from flexwm.evaluation.simulator import EvalConfig, evaluate_run

    cfg = EvalConfig(ckpt=str(ckpt), env=env, tasks=_tasks(env, task, "avdc"), policy=policy, episodes=episodes,
                     seed=seed, max_steps=max_steps, instructions=instructions, budget=budget, flow_steps=flow_steps,
                     ac_noise=ac_noise, ac_guidance=ac_guidance, cfg_scale=cfg_scale, device=device,
                     policy_overrides=parse_overrides(set_), videos=videos, env_options=_env_options(env, env_set))
    result = evaluate_run(cfg, out, resume=resume, command=_command(), log=typer.echo, progress=True)
    typer.echo(f"average over tasks {result['average_over_tasks']:.1%}; wrote {result['out']}")


@app.command()
def improve(
    bc: Path = typer.Option(..., help="a flexwm train-bc --no-proprio directory: the policy to improve"),
    task: str | None = typer.Option(None, "--task", "--tasks",
                                    help=f"task name (start states come from its simulator; default: {ONE_TASK})"),
    out: Path = typer.Option(..., help="output directory: the improved BC model and improve_log.json"),
    ckpt: Path | None = typer.Option(None, help=CKPT + ": train in its imagination"),
    real: bool = typer.Option(False, "--real", help="train in the real simulator instead (same algorithm)"),
    env: str = typer.Option("metaworld", help=ENV),
    flow_steps: int = typer.Option(4, help="flow sampler steps of the imagined rollouts"),
    data: Path | None = typer.Option(None, help="with --set start=dataset: branch from this dataset's frames of "
                                                "the task (the run's held-out episodes excluded)"),
    seed: int | None = typer.Option(None, help="shortcut for --set seed=N (first start seed)"),
    device: str = typer.Option("cpu", help=DEVICE),
    set_: list[str] = typer.Option([], "--set", help=SET.format(example="iterations=8") + " (ImproveConfig)"),
    env_set: list[str] = typer.Option([], "--env-set", help=ENV_SET),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD.replace("OUT", "--out")),
    tensorboard_dir: Path | None = typer.Option(None, help=TENSORBOARD_DIR),
) -> None:
    """Improve a behaviour-cloning policy by RL in imagination (positive-advantage weighted regression on
    batched imagined rollouts scored by the success head), or in the real simulator with --real.
    `--set start=dataset --set reward=progress --data DATA`: short imagined branches from real dataset frames."""
    from flexwm.config import apply_overrides
    from flexwm.rl.improve import ImproveConfig, improve_run

    cfg = apply_overrides(ImproveConfig(), [*set_, *([f"seed={seed}"] if seed is not None else [])])
    log = improve_run(bc, _task(env, task), out, cfg, ckpt=ckpt, real=real, env_name=env, flow_steps=flow_steps,
                      data=data, device=device, progress=True, command=_command(),
                      env_options=_env_options(env, env_set), tensorboard=_tensorboard(tensorboard, tensorboard_dir))
    _echo_json({"out": str(out), "mean_return_per_iteration": [r["mean_return"] for r in log["iterations"]],
                "wall_s": log["wall_s"]})


@app.command("steer-wam")
def steer_wam_cmd(
    ckpt: Path = typer.Option(..., help=CKPT + ": its WAM is steered (and its AC mode imagines)"),
    task: str | None = typer.Option(None, "--task", "--tasks",
                                    help=f"task name (start states come from its simulator; default: {ONE_TASK})"),
    out: Path = typer.Option(..., help="output directory for the noise policy (model.safetensors, config.json)"),
    real: bool = typer.Option(False, "--real", help="learn from real-simulator rollouts instead of imagined ones"),
    env: str = typer.Option("metaworld", help=ENV),
    flow_steps: int = typer.Option(4, help="flow sampler steps (WAM and imagined rollouts)"),
    seed: int | None = typer.Option(None, help="shortcut for --set seed=N (first start seed)"),
    device: str = typer.Option("cpu", help=DEVICE),
    set_: list[str] = typer.Option([], "--set", help=SET.format(example="iterations=5") + " (NoiseRLConfig)"),
    env_set: list[str] = typer.Option([], "--env-set", help=ENV_SET),
    tensorboard: bool = typer.Option(False, "--tensorboard", help=TENSORBOARD.replace("OUT", "--out")),
    tensorboard_dir: Path | None = typer.Option(None, help=TENSORBOARD_DIR),
) -> None:
    """Learn a noise policy that steers the WAM mode's initial action noise by RL (latent-space RL; the model's
    weights stay frozen). Evaluate it with flexwm eval --policy wam-steered --set noise_policy=OUT."""
    from flexwm.config import apply_overrides
    from flexwm.rl.noise_rl import NoiseRLConfig, steer_wam_run

    cfg = apply_overrides(NoiseRLConfig(), [*set_, *([f"seed={seed}"] if seed is not None else [])])
    log = steer_wam_run(ckpt, _task(env, task), out, cfg, real=real, env_name=env, flow_steps=flow_steps,
                        device=device, progress=True, command=_command(), env_options=_env_options(env, env_set),
                        tensorboard=_tensorboard(tensorboard, tensorboard_dir))
    _echo_json({"out": str(out), "mean_return_per_iteration": [r["mean_return"] for r in log["iterations"]],
                "wall_s": log["wall_s"]})


@app.command("evaluate-policies")
def evaluate_policies(
    ckpt: Path = typer.Option(..., help=CKPT + ": the world model"),
    suite: Path = typer.Option(..., help="suite YAML (see examples/suite.yaml)"),
    env: str = typer.Option("metaworld", help=ENV),
    task: str | None = typer.Option(None, "--task", "--tasks", help=f"task name (default: {ONE_TASK})"),
    episodes: int = typer.Option(10, help="episodes per policy, same initial states in both worlds"),
    seed: int = typer.Option(10_000, help="first reset seed"),
    horizon: int | None = typer.Option(None, help="steps per episode (default: the env's limit)"),
    flow_steps: int = typer.Option(4, help="flow sampler steps of the world model"),
    ac_noise: str = typer.Option("sample", help="imagined rollouts: sample | zero (deterministic)"),
    ac_guidance: float = typer.Option(1.0, help="> 1: imagined futures follow the actions more (2 model calls)"),
    success_threshold: str = typer.Option("0.5", help="imagined P(success) that counts as success, or "
                                                      "'calibrated' (the result of flexwm calibrate)"),
    calibration: Path | None = typer.Option(None, help="with --success-threshold calibrated: the --out of flexwm "
                                                       "calibrate (default runs/eval/NAME/, then the run itself)"),
    device: str = typer.Option("cpu", help=DEVICE),
    out: Path | None = typer.Option(None, help="output folder (default runs/eval/NAME/policy-eval-TASK)"),
    env_set: list[str] = typer.Option([], "--env-set", help=ENV_SET),
) -> None:
    """Run each policy of a suite in the real simulator and in the world model; report success per policy,
    Pearson, Spearman and MMRV, and a scatter plot."""
    from flexwm.evaluation.policy_eval import describe_correlation, evaluate_policies_run

    res = evaluate_policies_run(ckpt, suite, env, _task(env, task), episodes=episodes, seed=seed, horizon=horizon,
                                flow_steps=flow_steps, ac_noise=ac_noise, ac_guidance=ac_guidance,
                                success_threshold=success_threshold, calibration=calibration, out=out, device=device,
                                env_options=_env_options(env, env_set), progress=True)
    for p in res["policies"]:
        typer.echo(f"{p['name']:16s} real {p['real']['rate']:.0%}  imagined {p['imagined']['rate']:.0%}  "
                   f"({p['imagination']})")
    typer.echo(describe_correlation(res))
    stats = {k: res.get(k) for k in ("pearson", "spearman", "mmrv", "pearson_prob")}
    stats = {k: None if v is None or v != v else v for k, v in stats.items()}  # undefined (NaN): null, as saved
    typer.echo(json.dumps(stats) + f"\nwrote {res['out']}")


@app.command()
def calibrate(
    ckpt: Path = typer.Option(..., help="training run (or one of its checkpoints): the world model"),
    data: Path | None = typer.Option(None, help="dataset (default: the run's first); its held-out episodes are used"),
    task: str = typer.Option("", "--task", "--tasks", help="comma-separated tasks to use (default: all)"),
    max_episodes: int = typer.Option(128, help="at most this many held-out episodes"),
    horizon: int | None = typer.Option(None, help="steps replayed per episode (default: the whole episode)"),
    flow_steps: int = typer.Option(4, help="flow sampler steps (use the same for evaluate-policies)"),
    ac_noise: str = typer.Option("sample", help="imagined rollouts: sample | zero"),
    seed: int = typer.Option(0, help="imagination noise seed"),
    device: str = typer.Option("cpu", help=DEVICE),
    out: Path | None = typer.Option(None, help="output folder (writes OUT/imagined_calibration.json) or a .json "
                                               "file; default runs/eval/NAME/"),
) -> None:
    """Replay held-out episodes in imagination and pick the imagined-success threshold that best separates
    their real outcomes; writes imagined_calibration.json (threshold, balanced accuracy, ROC AUC) to --out."""
    from flexwm.evaluation.calibrate import calibrate_run

    res = calibrate_run(ckpt, out, data=data, tasks=_split(task), max_episodes=max_episodes, horizon=horizon,
                        flow_steps=flow_steps, ac_noise=ac_noise, seed=seed, device=device, command=_command(),
                        progress=True)
    _echo_json({k: res[k] for k in ("threshold", "balanced_accuracy", "balanced_accuracy_at_0.5", "auc",
                                    "n_success", "n_failure")} | {"wrote": res["out"]})


@app.command("tune-head")
def tune_head(
    ckpt: Path = typer.Option(..., help="training run (or one of its checkpoints): the world model"),
    out: Path = typer.Option(..., help="new checkpoint directory for the model with the re-fitted head"),
    data: Path | None = typer.Option(None, help="dataset (default: the run's first); its training episodes are used"),
    max_episodes: int = typer.Option(384, help="at most this many training episodes, shared evenly by outcome"),
    horizon: int | None = typer.Option(None, help="steps replayed per episode (default: the whole episode)"),
    flow_steps: int = typer.Option(4, help="flow sampler steps of the imagined rollouts (use the same later)"),
    ac_noise: str = typer.Option("sample", help="imagined rollouts: sample | zero"),
    seed: int = typer.Option(0, help="episode choice and imagination noise seed"),
    device: str = typer.Option("cpu", help=DEVICE),
) -> None:
    """Re-fit the success head on the model's own imagined futures of training episodes (real outcomes as labels);
    writes a checkpoint to OUT with only the success row of the head changed, and OUT/head_tuning.json."""
    from flexwm.evaluation.imagined_head import tune_head_run

    res = tune_head_run(ckpt, out, data=data, max_episodes=max_episodes, horizon=horizon, flow_steps=flow_steps,
                        ac_noise=ac_noise, seed=seed, device=device, progress=True, command=_command())
    _echo_json({k: res[k] for k in ("episodes", "windows", "positive_windows", "l2", "validation", "train_fit")}
               | {"wrote": str(out)})


@app.command()
def export(run: Path = typer.Argument(..., help=CKPT),
           out: Path = typer.Option(..., help="new folder for the self-contained model")) -> None:
    """Write a model as one self-contained folder (weights, model config, frame tokenizer, text-encoder
    reference with its cached instruction embeddings, embodiment metadata): copy it anywhere and use it with
    --ckpt DIR or flexwm.load(DIR)."""
    from flexwm.inference import export as export_model

    typer.echo(f"wrote {export_model(run, out)}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="output directory"),
         model: str = typer.Option("auto", help="auto (checkpoints/avdc11-cpu when found, else tiny) | tiny (the "
                                                "small checkpoint shipped in flexwm) | an exported model folder"),
         train: bool = typer.Option(False, help="train the tiny demo model here instead of using a shipped one"),
         episodes: int | None = typer.Option(None, help="episodes collected per task and source (default: the "
                                                        "model's setup, 1 for avdc11-cpu, 4 for tiny)"),
         eval_episodes: int | None = typer.Option(None, help="real-simulator episodes per task and way to act "
                                                             "(default: 5 for avdc11-cpu, 3 for tiny)"),
         workers: int = typer.Option(2, help="collection worker processes"),
         device: str = typer.Option("cpu", help=DEVICE)) -> None:
    """Everything in one command on a CPU: collect, model, act (wam, best-of-n, hybrid, random), evaluate
    policies, and write OUT/report.html. Resumes: a rerun skips finished stages."""
    from flexwm.demo import run_demo

    run_demo(out, model=model, train=train, episodes=episodes, workers=workers, eval_episodes=eval_episodes,
             device=device)


@app.command("export-demo", hidden=True)
def export_demo(run: Path = typer.Argument(..., help="a training run of the demo preset")) -> None:
    """Write a run's latest checkpoint (fp16) and tokenizer into flexwm/assets/demo (maintainers)."""
    from flexwm.demo import export_demo_checkpoint

    typer.echo(f"wrote {export_demo_checkpoint(run)}")


@app.command()
def report(run: Path = typer.Argument(..., help="training run directory"),
           out: Path | None = typer.Option(None, help="HTML file (default RUN/report.html)"),
           results: list[Path] = typer.Option([], help="an evaluation output folder (the --out of flexwm eval / "
                                                       "evaluate-policies; repeatable; default runs/eval/NAME/)"),
           rollouts: int = typer.Option(3, help="held-out episodes shown as real vs imagined videos (0 = none)"),
           device: str = typer.Option("cpu", help=DEVICE)) -> None:
    """Rebuild the offline HTML report of a run from its saved results (config, curves, evals, videos)."""
    from flexwm.report import build_report

    path = build_report(run, out, rollouts=rollouts, results=results or None, device=device)
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
