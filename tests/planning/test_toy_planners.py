"""Planners against a toy point mass with a known optimum (reach the goal exactly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from flexwm.errors import ConfigError
from flexwm.planning import make_policy
from tests.helpers.toy_planning import PointMass, observation, render

torch.set_num_threads(1)
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)


def random_shooting_distance(wm: PointMass, n: int, horizon: int, seed: int) -> float:
    """Best final distance among n uniform random action sequences (the same evaluation budget)."""
    g = torch.Generator().manual_seed(seed)
    actions = torch.rand(n, horizon, 2, generator=g) * 2 - 1
    return min(wm.final_distance(a) for a in actions)


@pytest.mark.parametrize("name,cfg", [
    ("cem", dict(chunks=2, population=64, iterations=8, elites=8)),
    ("mppi", dict(chunks=2, population=64, iterations=8, elites=8)),
    ("grad", dict(chunks=2, iterations=30, restarts=4, lr=0.1)),
])
def test_planner_reaches_the_goal_and_beats_random_shooting(name: str, cfg: dict) -> None:
    wm = PointMass(goal=(0.6, -0.6))
    policy = make_policy(name, wm, cfg, action_space=BOX)
    policy.reset(seed=0)
    plan = policy.plan(observation())
    assert plan.actions.shape == (8, 2)
    dist = wm.final_distance(plan.actions)
    budget = 64 * 9 if name != "grad" else 4 * 31  # candidate evaluations (grad: + gradients)
    rs = [random_shooting_distance(wm, budget, 8, seed) for seed in range(3)]
    assert dist < 0.08, f"{name} ended {dist:.3f} from the goal (started 0.85 away)"
    assert dist < min(rs) / 2, f"{name} {dist:.3f} vs random shooting {rs}"
    assert plan.score is not None and np.isfinite(plan.score)
    assert plan.latents.shape == (4, 2, 1, 1)  # 8 actions / frame_stride 2


def test_planners_respect_the_action_bounds_when_the_goal_is_out_of_reach() -> None:
    wm = PointMass(goal=(3.0, 0.0))  # 8 steps of dt 0.1 reach at most 0.8: optimum is full throttle
    for name in ("cem", "mppi", "grad"):
        policy = make_policy(name, wm, {"chunks": 2}, action_space=BOX, budget="tiny")
        policy.reset(0)
        a = policy.plan(observation()).actions
        assert np.all(a <= 1.0 + 1e-6) and np.all(a >= -1.0 - 1e-6)


def test_best_of_n_picks_the_best_of_its_candidates() -> None:
    wm = PointMass(propose_noise=0.8)
    policy = make_policy("best-of-n", wm, {"n": 16}, action_space=BOX)
    policy.reset(0)
    plan = policy.plan(observation())
    values = plan.info["values"]
    assert plan.info["chosen"] == int(np.argmax(values)) and plan.score == pytest.approx(max(values))
    true = [wm.final_distance(a) for a in plan.info["candidate_actions"]]
    assert wm.final_distance(plan.actions) == pytest.approx(min(true), abs=1e-5)
    assert len(set(np.round(true, 4))) > 1  # the candidates really differ


def test_best_of_n_resimulation_sees_through_lying_proposals() -> None:
    """Proposals whose frames claim success whatever the actions: only re-simulation ranks them right."""
    wm = PointMass(propose_noise=0.8, lying_proposals=True)
    chosen = {}
    for resim in (False, True):
        policy = make_policy("best-of-n", wm, {"n": 16, "resimulate": resim}, action_space=BOX)
        policy.reset(0)
        plan = policy.plan(observation())
        true = [wm.final_distance(a) for a in plan.info["candidate_actions"]]
        chosen[resim] = (wm.final_distance(plan.actions), min(true))
    assert chosen[True][0] == pytest.approx(chosen[True][1], abs=1e-5)
    assert chosen[False][0] > chosen[False][1] + 1e-3  # all candidates tie: the first one is taken


def test_best_of_n_cycles_noise_seeds_and_paraphrases() -> None:
    goals = {"go left": (-0.6, 0.0), "go up": (0.0, 0.6), "go right": (0.6, 0.0)}
    wm = PointMass(goal=(0.6, 0.0), propose_noise=0.1, instruction_goals=goals)
    policy = make_policy("best-of-n", wm, {"n": 5}, action_space=BOX, paraphrases=["go left", "go up"])
    policy.reset(0)
    plan = policy.plan(observation(instruction="go right"))
    instructions = plan.info["candidate_instructions"]
    assert instructions == ["go right", "go left", "go up", "go right", "go left"]
    for instr, actions in zip(instructions, plan.info["candidate_actions"]):  # each made under its instruction
        direction = np.asarray(goals[instr]) / 0.6
        assert float(actions.mean(0) @ direction) > 0.5, (instr, actions.mean(0))
    assert plan.info["chosen"] in (0, 3) and plan.instruction == "go right"  # scored for the given instruction
    first = plan.info["candidate_actions"]
    policy.reset(1)
    assert not np.allclose(policy.plan(observation(instruction="go right")).info["candidate_actions"], first)


@pytest.mark.parametrize("refine", ["cem", "grad", "none"])
def test_hybrid_is_at_least_as_good_as_its_best_proposal(refine: str) -> None:
    wm = PointMass(propose_noise=0.6)
    policy = make_policy("hybrid", wm, {"refine": refine, "proposals": 8, "iterations": 4}, action_space=BOX)
    policy.reset(1)
    plan = policy.plan(observation())
    best_proposal = max(plan.info["proposal_values"])
    assert plan.score >= best_proposal - 1e-6
    if refine != "none":  # on this smooth problem refinement must help
        assert plan.score > best_proposal + 1e-3 and plan.info["chosen"].startswith("refined")
    else:
        assert plan.score == pytest.approx(best_proposal)


def test_hybrid_keeps_the_best_proposal_when_refinement_makes_things_worse(monkeypatch) -> None:
    from flexwm.planning.hybrid import HybridPlanner

    def worse(self, evaluate, top, low, high, half, generator):
        actions = -top[0]  # away from the goal
        value, latents = evaluate(actions[None])
        return {"actions": actions, "value": float(value[0]), "latents": latents[0]}

    monkeypatch.setattr(HybridPlanner, "_refine", worse)
    wm = PointMass(propose_noise=0.3)
    policy = make_policy("hybrid", wm, action_space=BOX, budget="tiny")
    policy.reset(0)
    plan = policy.plan(observation())
    assert plan.info["chosen"] == "proposal" and plan.info["refined_value"] < plan.score
    assert plan.score == pytest.approx(max(plan.info["proposal_values"]))


def test_goal_image_objective_reaches_the_goal_and_rejects_a_wrong_size() -> None:
    wm = PointMass(goal=(-0.9, 0.9))  # the score head wants (-0.9, 0.9); the goal image says (0.5, 0.3)
    cfg = {"chunks": 2, "population": 64, "iterations": 8, "elites": 8, "objective": {"kind": "goal"}}
    policy = make_policy("cem", wm, cfg, action_space=BOX, goal_image=render((0.5, 0.3)))
    policy.reset(0)
    plan = policy.plan(observation())
    start = wm.encode(render((0, 0))[None]).context[0, -1, :, 0, 0]
    end = start + wm.dt * torch.as_tensor(plan.actions).sum(0)
    assert float((end - torch.tensor([0.5, 0.3])).norm()) < 0.05
    assert float((end - wm.goal).norm()) > 1.0  # it followed the goal image, not the score head
    with pytest.raises(ConfigError, match="16x16.*8x8"):
        make_policy("cem", wm, cfg, action_space=BOX, goal_image=np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="goal image"):
        make_policy("cem", wm, cfg, action_space=BOX)


def test_action_dim_mismatch_names_both_dims() -> None:
    with pytest.raises(ConfigError, match=r"2-d actions.*4-d"):
        make_policy("cem", PointMass(), action_space=spaces.Box(-1, 1, (4,), np.float32))


@pytest.mark.parametrize("name", ["cem", "mppi", "grad", "best-of-n", "hybrid", "wam", "random"])
def test_same_seed_same_actions(name: str) -> None:
    wm = PointMass(rollout_noise=0.05)
    cfg = {"video_source": "propose"} if name.startswith("wam") else None

    def run(seed: int) -> np.ndarray:
        policy = make_policy(name, wm, cfg, action_space=BOX, budget="tiny")
        policy.reset(seed)
        return np.stack([policy.act(observation((0.1 * t, 0.0))) for t in range(5)])

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_cem_warm_start_shifts_the_previous_plan() -> None:
    wm = PointMass(goal=(0.6, -0.6))
    policy = make_policy("cem", wm, {"chunks": 2, "execute": 2, "population": 16, "iterations": 1, "elites": 4,
                                      "init_std": 0.0, "min_std": 0.0}, action_space=BOX)
    policy.reset(0)
    first = policy.plan(observation()).actions  # zero std: every candidate is the (centre) mean
    policy.act(observation())
    policy.act(observation())
    planner = policy.planner
    planner._previous = torch.as_tensor(np.arange(16, dtype=np.float32).reshape(8, 2) / 16)
    second = policy.act(observation())  # replans from the previous plan shifted by the 2 executed actions
    np.testing.assert_allclose(second, np.arange(4, 6) / 16, atol=1e-6)
    np.testing.assert_allclose(first, 0.0)
