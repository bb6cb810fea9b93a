"""Ways to act with one world model, behind one policy interface: reset(seed), act(observation) -> action.

    wm = load_run("runs/cpu")
    policy = make_policy("cem", wm, {"population": 128}, action_space=env.action_space)
    result = evaluate_policy(policy, "metaworld", "door-open-v3", episodes=20, seed=0)

| name       | how it picks actions                                                              | file         |
|------------|-----------------------------------------------------------------------------------|--------------|
| wam        | frames + actions generated jointly from the instruction (WAM mode)                 | wam.py       |
| wam-seq    | frames generated first (video mode), actions decoded by inverse dynamics            | wam.py       |
| best-of-n  | N WAM samples over noise seeds (and paraphrases), best by the success / value head | best_of_n.py |
| cem, mppi  | sampling over action sequences, scored in action-conditioned (AC) mode              | sampling.py  |
| grad       | Adam on the actions through the differentiable AC rollout (or on the WAM noise)     | gradient.py  |
| hybrid     | WAM proposals, re-simulated in AC mode, best refined by CEM or gradient steps       | hybrid.py    |
| wam-steered| WAM whose initial action noise comes from a noise policy learned by RL              | steered.py   |
| bc         | behaviour-cloning baseline: frame + proprio + instruction -> action chunk           | bc.py        |
| random     | uniform random actions                                                              | random.py    |

Every policy plans H actions and executes the first `execute` before replanning (receding horizon);
`policy.last_plan` holds the plan with its imagined latents, score and timing.
"""

from __future__ import annotations

from typing import Any

from flexwm.config import from_dict, to_dict, validate
from flexwm.errors import ConfigError
from flexwm.models.interface import WorldModel
from flexwm.planning.base import (
    FrameHistory,
    Plan,
    Planner,
    RecedingHorizonPolicy,
    WMPlanner,
    action_bounds,
    check_action_dim,
)
from flexwm.planning.bc import BCConfig, BCModel, BCPlanner, BCPolicyConfig, train_bc
from flexwm.planning.best_of_n import BestOfNConfig, BestOfNPlanner
from flexwm.planning.gradient import GradConfig, GradientPlanner
from flexwm.planning.hybrid import HybridConfig, HybridPlanner
from flexwm.planning.objectives import GoalObjective, ObjectiveConfig, SuccessObjective, make_objective
from flexwm.planning.random import RandomConfig, RandomPlanner
from flexwm.planning.sampling import CEMConfig, MPPIConfig, SamplingPlanner
from flexwm.planning.wam import SteeredWAMConfig, WAMConfig, WAMPlanner

__all__ = [
    "POLICIES", "CONFIGS", "BUDGETS", "make_policy", "policy_config", "train_bc", "check_action_dim",
    "action_bounds",
    "Plan", "Planner", "WMPlanner", "RecedingHorizonPolicy", "FrameHistory",
    "WAMConfig", "SteeredWAMConfig", "BestOfNConfig", "CEMConfig", "MPPIConfig", "GradConfig", "HybridConfig",
    "RandomConfig",
    "BCConfig", "BCPolicyConfig", "BCModel", "ObjectiveConfig", "SuccessObjective", "GoalObjective",
]

CONFIGS: dict[str, type] = {
    "wam": WAMConfig, "wam-seq": WAMConfig, "best-of-n": BestOfNConfig, "cem": CEMConfig, "mppi": MPPIConfig,
    "grad": GradConfig, "hybrid": HybridConfig, "bc": BCPolicyConfig, "random": RandomConfig,
    "wam-steered": SteeredWAMConfig,
}
POLICIES: tuple[str, ...] = tuple(CONFIGS)

# small budgets for tests and quick looks on a CPU
TINY: dict[str, dict[str, Any]] = {
    "best-of-n": dict(n=4), "cem": dict(population=8, iterations=2, elites=2),
    "mppi": dict(population=8, iterations=2, elites=2), "grad": dict(iterations=2, restarts=2),
    "hybrid": dict(proposals=4, top_k=2, iterations=2, population=8, elites=2),
}
# budgets that keep one plan of the `cpu` world-model preset near 1 s on 2 CPU cores with 4 flow steps
# (`flexwm eval --budget cpu` also samples with 4 flow steps; measured by benchmarks/act.py: CEM 0.90 s,
# hybrid 1.12 s per plan); the defaults (population 64 x 4 iterations) are sized for an accelerator and take
# 3-5 s per plan on a CPU
CPU: dict[str, dict[str, Any]] = {
    "best-of-n": dict(n=4), "cem": dict(population=16, iterations=2, elites=4),
    "mppi": dict(population=16, iterations=2, elites=4), "grad": dict(iterations=3, restarts=2),
    "hybrid": dict(proposals=4, population=16, iterations=2),
}
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {"default": {}, "cpu": CPU, "tiny": TINY}


def policy_config(name: str, cfg: Any = None, budget: str = "default") -> Any:
    """The config dataclass of policy `name` from None (defaults), a dict (strictly checked) or a dataclass.

    `budget` picks the search budget the dict overrides: "default" (sized for an accelerator), "cpu" (about 1 s
    per plan with the cpu world model on 2 cores) or "tiny" (tests)."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown policy {name!r}; choose one of {list(POLICIES)}")
    if budget not in BUDGETS:
        raise ConfigError(f"unknown policy budget {budget!r}; choose one of {list(BUDGETS)}")
    cls = CONFIGS[name]
    base = BUDGETS[budget].get(name, {})
    if cfg is None or isinstance(cfg, dict):
        return from_dict(cls, {**base, **(cfg or {})})
    if not isinstance(cfg, cls):
        raise ConfigError(f"policy {name!r} takes a {cls.__name__}, got a {type(cfg).__name__}")
    validate(cfg)
    return cfg


def make_policy(name: str, wm: WorldModel | None = None, cfg: Any = None, *, action_space: Any = None,
                goal_image: Any = None, paraphrases: list[str] | None = None, bc_model: BCModel | None = None,
                text_encoder: Any = None, budget: str = "default") -> RecedingHorizonPolicy:
    """Build policy `name` around world model `wm` (not needed for bc / random).

    cfg: that policy's config (dataclass or dict); `budget` ("default" | "cpu" | "tiny") picks the search
    budget. action_space: the env's Box (bounds for sampling and clipping; default: the model's action range).
    goal_image: for `objective.kind = "goal"`. paraphrases: extra instructions best-of-n may sample under.
    bc_model: a trained BCModel for `bc` (its text encoder is rebuilt unless `text_encoder` is given).
    """
    cfg = policy_config(name, cfg, budget)
    policy = _build(name, wm, cfg, action_space, goal_image, paraphrases, bc_model, text_encoder)
    policy.config = to_dict(cfg)
    return policy


def _build(name: str, wm: WorldModel | None, cfg: Any, action_space: Any, goal_image: Any,
           paraphrases: list[str] | None,
           bc_model: BCModel | None, text_encoder: Any) -> RecedingHorizonPolicy:
    if name == "bc":
        if bc_model is None:
            raise ConfigError("policy 'bc' needs bc_model= (train_bc(...) or BCModel.from_pretrained(dir))")
        low, high = action_bounds(None, action_space, bc_model.cfg.action_dim) if action_space is not None else (
            bc_model.action_low.cpu().numpy(), bc_model.action_high.cpu().numpy())
        planner = BCPlanner(bc_model, text_encoder)
        execute = cfg.execute if cfg.execute is not None or cfg.ensemble is not None else max(1, planner.horizon // 2)
        return RecedingHorizonPolicy(planner, execute=execute, action_low=low, action_high=high, name="bc",
                                     ensemble=cfg.ensemble)
    if name == "random":
        dim = None if wm is None else int(wm.action_dim)
        low, high = action_bounds(wm, action_space, dim)
        return RecedingHorizonPolicy(RandomPlanner(cfg, low, high), execute=cfg.execute, action_low=low,
                                     action_high=high, name="random")
    if wm is None:
        raise ConfigError(f"policy {name!r} needs a world model: make_policy({name!r}, load_run(RUN_DIR))")
    low, high = action_bounds(wm, action_space, int(wm.action_dim))
    if name == "wam-steered":
        from flexwm.planning.steered import NoisePolicy, steered_wam_policy

        if not cfg.noise_policy:
            raise ConfigError("policy 'wam-steered' needs noise_policy=DIR (a flexwm steer-wam output), e.g. "
                              "--set noise_policy=runs/noise-pol")
        return steered_wam_policy(wm, NoisePolicy.from_pretrained(cfg.noise_policy), cfg.std, execute=cfg.execute,
                                  action_low=low, action_high=high)
    if name in ("wam", "wam-seq"):
        planner: Planner = WAMPlanner(wm, cfg, sequential=name == "wam-seq")
    else:
        objective = make_objective(cfg.objective, wm, goal_image)
        if name == "best-of-n":
            planner = BestOfNPlanner(wm, cfg, objective, low, high, paraphrases)
        elif name in ("cem", "mppi"):
            planner = SamplingPlanner(wm, cfg, objective, low, high, name)
        elif name == "grad":
            planner = GradientPlanner(wm, cfg, objective, low, high)
        else:
            planner = HybridPlanner(wm, cfg, objective, low, high)
    return RecedingHorizonPolicy(planner, execute=cfg.execute, action_low=low, action_high=high, name=name,
                                 ensemble=getattr(cfg, "ensemble", None))

