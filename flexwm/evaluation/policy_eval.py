"""Policy evaluation in the world model: does ranking policies in imagination rank them as the simulator does?

    suite = load_suite("suite.yaml")   # policies: [{name: expert, kind: expert}, {name: n3, kind: noisy, noise: 0.3}]
    result = evaluate_suite(suite, load_run("runs/cpu"), "metaworld", "door-open-v3", episodes=20, seed=0,
                            out_dir="eval/")   # -> policy_eval.json, policy_eval.png

Every policy runs episode e from `env.reset(seed + e)` in the real simulator, and in the world model from that
episode's real first frame (the same initial state). Real success: the simulator's flag at any step. Imagined
success: the success head above `success_threshold` after any imagined frame (the real start frame is not
counted). Both come with Wilson 95% intervals; across policies we report Pearson, Spearman and MMRV of the
imagined vs real success rates, the correlation of the real rates with each policy's mean imagined P(success)
(graded, so defined even when every thresholded imagined rate is equal), and a scatter plot. A correlation
is undefined when one side is the same for every policy: the result then holds NaN (null in JSON) and a
`correlation_note` saying so, and `describe_correlation` puts it in words.

How each policy runs in imagination:
* Policies that act on observations (random, bc, flexwm) run truly closed-loop: at step 0 they see the real
  first observation; the world model imagines the next latent frame every `frame_stride` actions (all
  episodes in one batched call) and the policy sees that frame decoded, held for the `frame_stride` steps
  until the next one, with proprio None (imagined states have none). The horizon is rounded down to a
  multiple of frame_stride in both worlds.
* Scripted experts (expert, noisy) read the privileged simulator state (object poses) every step, which the
  world model does not have. Feeding them a stale state would evaluate a broken policy, so they are evaluated
  open-loop: the actions they took in the real episode are replayed in the model. That measures whether the
  model predicts the outcome of those actions, not the policy's reactions to imagined states, and is labelled
  "open-loop replay" in the output so it is never mistaken for a closed-loop result.
"""

from __future__ import annotations

import difflib
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexwm.config import field, from_dict, to_dict
from flexwm.envs.base import Observation, RobotEnv, ScriptedPolicy
from flexwm.errors import ConfigError, EnvError
from flexwm.evaluation.stats import mmrv, pearson, spearman, success_summary
from flexwm.models.interface import WorldModel

KINDS = ("expert", "noisy", "random", "bc", "flexwm")


@dataclass
class PolicySpec:
    name: str = field("", help="unique name in the suite")
    kind: str = field("expert", choices=KINDS)
    noise: float | None = field(None, ge=0.0, help="noisy: action-noise std as a fraction of the half range")
    checkpoint: str | None = field(None, help="bc: a BCModel directory; flexwm: a run (default: the model evaluated)")
    mode: str | None = field(None, help="flexwm: the flexwm.planning policy (wam, wam-seq, best-of-n, cem, ...)")
    config: dict[str, Any] | None = field(None, help="bc / flexwm: that policy's config overrides")


def parse_suite(data: Any, source: str = "suite") -> list[PolicySpec]:
    """{"policies": [...]} or a bare list of policy mappings -> specs; errors name the policy and the field."""
    if isinstance(data, dict):
        extra = sorted(set(data) - {"policies"})
        if extra:
            raise ConfigError(f"{source}: unknown top-level key(s) {extra}; a suite has only 'policies'")
        data = data.get("policies")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{source}: expected a non-empty list of policies under 'policies'")
    specs: list[PolicySpec] = []
    for i, entry in enumerate(data):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{source}: policy {name!r} (policies[{i}])" if name else f"{source}: policies[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping like {{name: expert, kind: expert}}, got {entry!r}")
        kind = entry.get("kind")
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: field 'kind' = {kind!r} is not a policy kind.{hint} "
                              f"Choose one of {list(KINDS)}")
        try:
            spec = from_dict(PolicySpec, entry)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        problems = []
        if not spec.name:
            problems.append("field 'name' is missing; give every policy a unique name")
        if spec.kind == "noisy" and spec.noise is None:
            problems.append("field 'noise' is required for kind 'noisy' (for example noise: 0.3)")
        if spec.kind != "noisy" and spec.noise is not None:
            problems.append(f"field 'noise' only applies to kind 'noisy', not {spec.kind!r}")
        if spec.kind == "bc" and not spec.checkpoint:
            problems.append("field 'checkpoint' is required for kind 'bc' (a BCModel directory)")
        if spec.kind not in ("bc", "flexwm") and (spec.checkpoint or spec.mode or spec.config):
            problems.append(f"fields 'checkpoint' / 'mode' / 'config' do not apply to kind {spec.kind!r}")
        if spec.kind == "bc" and spec.mode:
            problems.append("field 'mode' does not apply to kind 'bc'")
        if spec.kind == "flexwm" and spec.mode and spec.mode not in _flexwm_modes():
            close = difflib.get_close_matches(spec.mode, _flexwm_modes(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(f"field 'mode' = {spec.mode!r} is not a flexwm policy.{hint} Choose one of "
                            f"{list(_flexwm_modes())}")
        if spec.name and spec.name in {s.name for s in specs}:
            problems.append(f"field 'name' = {spec.name!r} is used twice; names must be unique")
        if problems:
            raise ConfigError(f"{where}: " + "; ".join(problems))
        specs.append(spec)
    return specs


def _flexwm_modes() -> tuple[str, ...]:
    from flexwm.planning import POLICIES

    return tuple(p for p in POLICIES if p not in ("bc", "random"))


def load_suite(path: str | Path) -> list[PolicySpec]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist")
    import yaml

    text = path.read_text()
    return parse_suite(yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text), str(path))


# ---------------------------------------------------------------------------------------------------------
# agents: reset(seed), act(observation) -> action, needs_privileged_state


class ScriptedAgent:
    """A scripted policy acting in `env`: it reads env.privileged_state() every step."""

    needs_privileged_state = True

    def __init__(self, policy: ScriptedPolicy, env: RobotEnv):
        self.policy, self.env = policy, env

    def reset(self, seed: int) -> None:
        self.policy.reset(seed)

    def act(self, obs: Observation) -> np.ndarray:
        return np.asarray(self.policy.act(obs, self.env.privileged_state()), dtype=np.float32)


AgentFactory = Callable[[PolicySpec, RobotEnv, WorldModel], Any]


def _scripted(spec: PolicySpec, env: RobotEnv, wm: WorldModel) -> ScriptedAgent:
    from flexwm.envs import make_expert
    from flexwm.envs.policies import NoisyPolicy

    expert = env.expert() if hasattr(env, "expert") else make_expert(env)
    if spec.kind == "noisy":
        expert = NoisyPolicy(expert, noise=float(spec.noise), action_space=env.action_space)
    return ScriptedAgent(expert, env)


def _random(spec: PolicySpec, env: RobotEnv, wm: WorldModel) -> Any:
    from flexwm.planning import make_policy

    return make_policy("random", action_space=env.action_space)


@functools.lru_cache(maxsize=1)
def _load_bc(checkpoint: str) -> Any:
    from flexwm.planning import BCModel

    return BCModel.from_pretrained(checkpoint)


@functools.lru_cache(maxsize=1)
def _load_run(checkpoint: str, embodiment: str) -> Any:
    from flexwm.inference.load import load_run

    return load_run(checkpoint, embodiment=embodiment)


def _bc(spec: PolicySpec, env: RobotEnv, wm: WorldModel) -> Any:
    from flexwm.planning import make_policy

    return make_policy("bc", cfg=spec.config, action_space=env.action_space, bc_model=_load_bc(spec.checkpoint))


def _flexwm(spec: PolicySpec, env: RobotEnv, wm: WorldModel) -> Any:
    """The flexwm.planning policy `mode` (default wam) around the run `checkpoint`, or the evaluated model."""
    from flexwm.planning import make_policy

    policy_wm = _load_run(spec.checkpoint, env.embodiment) if spec.checkpoint else wm
    return make_policy(spec.mode or "wam", policy_wm, spec.config, action_space=env.action_space)


# suite kind -> the factory of its agents
SUITE_AGENTS: dict[str, AgentFactory] = {"expert": _scripted, "noisy": _scripted, "random": _random, "bc": _bc,
                                         "flexwm": _flexwm}


def make_suite_policy(spec: PolicySpec, env: RobotEnv, wm: WorldModel,
                      agents: dict[str, AgentFactory] | None = None) -> Any:
    """The agent of suite entry `spec` acting in `env` (`agents` adds or replaces the factory of a kind)."""
    return {**SUITE_AGENTS, **(agents or {})}[spec.kind](spec, env, wm)


# ---------------------------------------------------------------------------------------------------------
# running


def _run_real(env: RobotEnv, agent: Any, seeds: list[int], steps: int, tick: Callable[[], Any] = lambda: None
              ) -> dict[str, Any]:
    first, actions, success = [], np.zeros((len(seeds), steps, env.action_space.shape[0]), np.float32), []
    for e, s in enumerate(seeds):
        obs = env.reset(s)
        agent.reset(s)
        first.append(obs)
        ok, t = False, 0
        for t in range(steps):
            actions[e, t] = env.check_action(agent.act(obs))
            res = env.step(actions[e, t])
            ok, obs = ok or bool(res.success), res.observation
            if res.done:
                break
        actions[e, t + 1:] = actions[e, t]  # an episode the env ended early: its last action held
        success.append(ok)
        tick()
    return {"first": first, "actions": actions, "success": success}


def _imagine(wm: WorldModel, env: RobotEnv, make_agent: Callable[[], Any], real: dict[str, Any], seeds: list[int],
             frames: int, threshold: float, open_loop: bool, tick: Callable[[], Any] = lambda: None,
             imagination: Any = None) -> dict[str, Any]:
    """Imagine the episodes of `real` (see the module doc). `imagination` (default `Imagination`) is the class of
    the batch of imagined episodes; one that keeps `features` (the success head's input, e.g.
    `FeatureImagination`) also returns them per episode and frame."""
    from flexwm.rl.imagination import Imagination

    n, stride = len(seeds), int(wm.frame_stride)
    imag = (imagination or Imagination)(wm, n)
    feats = []
    imag.seed(range(n), seeds)
    first = real["first"]
    imag.start(range(n), np.stack([o.image for o in first]), [o.instruction for o in first])
    agents = [] if open_loop else [make_agent() for _ in seeds]
    for a, s in zip(agents, seeds):
        a.reset(s)
    obs = list(first)
    trace = np.zeros((n, frames))
    for k in range(frames):
        if open_loop:
            chunk = real["actions"][:, k * stride:(k + 1) * stride]
        else:
            chunk = np.stack([[env.check_action(a.act(o)) for _ in range(stride)] for a, o in zip(agents, obs)])
        imag.step(chunk)
        trace[:, k] = imag.success.numpy()
        if getattr(imag, "features", None) is not None:
            feats.append(imag.features.numpy().copy())
        if not open_loop:
            obs = [Observation(image=img, proprio=None, instruction=o.instruction)
                   for img, o in zip(imag.images(), first)]
        tick()
    best = trace.max(axis=1)
    return {"success": list(best > threshold), "mean_max_prob": float(best.mean()), "trace": trace,
            "features": np.stack(feats, 1) if feats else None}


def compare(real: list[float], imagined: list[float], imagined_prob: list[float] | None = None) -> dict[str, Any]:
    """Pearson, Spearman and MMRV of imagined vs real success rates across policies (NaN where undefined).

    A correlation is undefined when either side is the same for every policy; `correlation_note` then says
    which in words (None when defined). With `imagined_prob` (each policy's mean over episodes of the highest
    imagined P(success)), `pearson_prob` / `spearman_prob` correlate the real rates with that graded imagined
    score, which stays defined when the thresholded imagined rates are all equal."""
    n = len(real)
    spread = lambda v: n >= 2 and float(np.std(v)) > 0  # noqa: E731
    defined = spread(real) and spread(imagined)
    out: dict[str, Any] = {"pearson": pearson(real, imagined) if defined else float("nan"),
                           "spearman": spearman(real, imagined) if defined else float("nan"),
                           "mmrv": mmrv(real, imagined) if n >= 2 else float("nan")}
    if imagined_prob is not None:
        prob_defined = spread(real) and spread(imagined_prob)
        out["pearson_prob"] = pearson(real, imagined_prob) if prob_defined else float("nan")
        out["spearman_prob"] = spearman(real, imagined_prob) if prob_defined else float("nan")
    if n < 2:
        note = "only one policy: a correlation across policies needs at least two"
    elif not spread(real):
        note = f"real success is {real[0]:.0%} for every policy: no correlation is defined (choose policies that " \
               "differ in real success, e.g. noisy experts at several noise levels)"
    elif not spread(imagined):
        note = f"the model imagines success {imagined[0]:.0%} for every policy: the success-rate correlation is " \
               "undefined"
    else:
        note = None
    out["correlation_note"] = note
    return out


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None


def describe_correlation(result: dict[str, Any]) -> str:
    """One line, in words, of how well imagined success ranks the policies as real success does: the statistics
    where they are defined, and why where they are not (never a bare "nan"). Reads a result of `evaluate_suite`
    or its saved policy_eval.json (where undefined numbers are null)."""
    pear, spear, mm = (_number(result.get(k)) for k in ("pearson", "spearman", "mmrv"))
    n = len(result.get("policies", [])) or None
    parts = []
    if pear is not None:
        rho = "" if spear is None else f", Spearman {spear:.2f}"
        parts.append(f"real vs imagined success rate: Pearson {pear:.2f}{rho}")
    elif result.get("correlation_note"):
        parts.append(result["correlation_note"])
    else:
        parts.append("real vs imagined success rate: no correlation is defined (a rate is the same for every policy)")
    real = {p["real"]["rate"] for p in result.get("policies", []) if isinstance(p.get("real"), dict)}
    if mm is not None and len(real) != 1:  # with one real rate there is no ranking to violate: MMRV is trivially 0
        parts.append(f"MMRV {mm:.2f}")
    prob = _number(result.get("pearson_prob"))
    if prob is not None:
        parts.append(f"real success rate vs imagined mean max P(success): Pearson {prob:.2f}")
    return ("; ".join(parts) + (f" ({n} policies)" if n else "")).strip()


def evaluate_suite(suite: Any, wm: WorldModel, env_name: str | None = None, task: str | None = None,
                   episodes: int = 10, seed: int = 0, horizon: int | None = None, *, env: RobotEnv | None = None,
                   success_threshold: float = 0.5, out_dir: str | Path | None = None,
                   agents: dict[str, AgentFactory] | None = None, env_options: Any = None,
                   progress: bool = False) -> dict[str, Any]:
    """Evaluate every policy of `suite` (a path, a parsed list or raw data) for `episodes` episodes each in the
    real simulator (`env`, or make_env(env_name, task, env_options=) at the model's image size) and in the world
    model.
    `horizon`: native steps per episode (default and cap: the env's max_episode_steps). `agents` adds or
    replaces the agent factory of a kind. With `out_dir`: policy_eval.json, policy_eval.png and suite.json.
    `progress`: a bar on stderr over every policy's real episodes and imagined frames."""
    from flexwm.metrics import progress_bar
    from flexwm.rl.imagination import check_env

    specs = load_suite(suite) if isinstance(suite, (str, Path)) else (
        suite if suite and all(isinstance(s, PolicySpec) for s in suite) else parse_suite(suite))
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    if env is None:
        from flexwm.envs import make_env

        if env_name is None or task is None:
            raise ConfigError("give env_name and task (or env=) to evaluate the suite on")
        env = make_env(env_name, task, image_size=wm.image_size or (64, 64), env_options=env_options)
    check_env(wm, env)
    limit = min(int(horizon or env.max_episode_steps), env.max_episode_steps)
    frames = limit // int(wm.frame_stride)
    if frames < 1:
        raise ConfigError(f"horizon {limit} is shorter than the model's frame_stride {wm.frame_stride}: "
                          "nothing to imagine")
    steps = frames * int(wm.frame_stride)  # the same horizon in both worlds: a multiple of frame_stride
    seeds = [int(seed) + e for e in range(episodes)]
    makers, first_agents = {}, {}
    for i, spec in enumerate(specs):  # build every policy before running any, so a bad one fails at once
        makers[spec.name] = lambda spec=spec: make_suite_policy(spec, env, wm, agents)
        try:
            first_agents[spec.name] = makers[spec.name]()
        except (ConfigError, EnvError) as e:
            raise type(e)(f"policy {spec.name!r} (policies[{i}]): {e}") from e
    records = []
    bar = progress_bar(len(specs) * (episodes + frames), "evaluate-policies", enabled=progress)
    for spec in specs:
        make, agent = makers[spec.name], first_agents[spec.name]
        t0 = time.perf_counter()
        bar.set_description(f"evaluate-policies {spec.name} real")
        real = _run_real(env, agent, seeds, steps, tick=lambda: bar.update(1))
        t1 = time.perf_counter()
        open_loop = bool(getattr(agent, "needs_privileged_state", False))
        bar.set_description(f"evaluate-policies {spec.name} imagined")
        imag = _imagine(wm, env, make, real, seeds, frames, success_threshold, open_loop, tick=lambda: bar.update(1))
        records.append({"name": spec.name, "kind": spec.kind,
                        "imagination": "open-loop replay" if open_loop else "closed-loop",
                        "real": success_summary(real["success"]), "imagined": success_summary(imag["success"]),
                        "imagined_mean_max_prob": imag["mean_max_prob"],
                        # per episode: the real outcome and the imagined P(success) after every imagined frame,
                        # so other thresholds and aggregation rules can be scored without re-running
                        "episodes": {"real_success": [bool(x) for x in real["success"]],
                                     "imagined_prob": np.round(imag["trace"], 4).tolist()},
                        "seconds": {"real": t1 - t0, "imagined": time.perf_counter() - t1}})
    bar.close()
    stats = compare([r["real"]["rate"] for r in records], [r["imagined"]["rate"] for r in records],
                    [r["imagined_mean_max_prob"] for r in records])
    result = {"env": env_name or env.embodiment, "task": task or env.task, "episodes": episodes, "seed": seed,
              "seeds": seeds, "horizon": steps, "imagined_frames": frames, "frame_stride": int(wm.frame_stride),
              "success_threshold": success_threshold, "policies": records, **stats}
    if out_dir is not None:
        from flexwm.io import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result["plot"] = str(plot_scatter(result, out / "policy_eval.png"))
        atomic_write_text(out / "suite.json", json.dumps([to_dict(s) for s in specs], indent=2) + "\n")
        atomic_write_text(out / "policy_eval.json", json.dumps(_jsonable(result), indent=2) + "\n")
    return result


def evaluate_policies_run(ckpt: str | Path, suite: Any, env_name: str, task: str, *, episodes: int = 10,
                          seed: int = 10_000, horizon: int | None = None, flow_steps: int = 4, ac_noise: str = "sample",
                          ac_guidance: float = 1.0, success_threshold: str | float = 0.5,
                          calibration: str | Path | None = None, out: str | Path | None = None,
                          device: str = "cpu", env_options: Any = None, progress: bool = False) -> dict[str, Any]:
    """`flexwm evaluate-policies`: load the model at `ckpt`, resolve the success threshold (a number or
    "calibrated", see `resolve_threshold`) and run `evaluate_suite` into `out` (default runs/eval/NAME/
    policy-eval-TASK/). Returns the result with "out": the folder written."""
    from flexwm.config import check_device
    from flexwm.envs import embodiment_of
    from flexwm.evaluation.calibrate import resolve_threshold
    from flexwm.inference import load_run
    from flexwm.runs import results_dir

    check_device(device)
    threshold = resolve_threshold(success_threshold, ckpt, flow_steps, calibration)
    wm = load_run(ckpt, steps=flow_steps, ac_noise=ac_noise, ac_guidance=ac_guidance, device=device,
                  prefer_embodiment=embodiment_of(env_name))
    out = Path(out) if out is not None else results_dir(ckpt) / f"policy-eval-{task}"
    res = evaluate_suite(suite, wm, env_name, task, episodes=episodes, seed=seed, horizon=horizon, out_dir=out,
                         success_threshold=threshold, env_options=env_options, progress=progress)
    return {**res, "out": str(out)}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def plot_scatter(result: dict[str, Any], path: str | Path) -> Path:
    """Imagined vs real success rate per policy, with Wilson 95% intervals and the y = x line (Agg, no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    for r in result["policies"]:
        x, y = r["real"]["rate"], r["imagined"]["rate"]
        err = lambda v, ci: [[max(0.0, v - ci[0])], [max(0.0, ci[1] - v)]]  # noqa: E731 - rounding at 0 / 1
        xerr, yerr = err(x, r["real"]["ci95"]), err(y, r["imagined"]["ci95"])
        marker = "s" if r["imagination"] == "open-loop replay" else "o"
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, capsize=3)
        ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    pear, spear, mm = (_number(result.get(k)) for k in ("pearson", "spearman", "mmrv"))
    stats = (f"Pearson {pear:.2f}, Spearman {spear:.2f}" if pear is not None and spear is not None
             else "correlation undefined (a rate is the same for every policy)")
    ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="real success rate", ylabel="imagined success rate",
           title=f"{result['task']}: {stats}" + ("" if mm is None else f", MMRV {mm:.2f}"))
    ax.title.set_fontsize(9)
    ax.text(0.02, 0.97, f"{result['episodes']} episodes / policy; squares: open-loop replay", fontsize=7,
            transform=ax.transAxes, va="top")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
