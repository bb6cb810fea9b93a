"""Every way to act, around a tiny untrained FlexWorldModelWrapper (64x64 frames, 4-d actions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from flexwm.envs.base import Observation
from flexwm.errors import ConfigError
from flexwm.models.interface import FlexWorldModelWrapper
from flexwm.planning import POLICIES, BCModel, make_policy
from flexwm.planning.bc import preset as bc_preset

torch.set_num_threads(1)
BOX = spaces.Box(-1.0, 1.0, (4,), np.float32)


def obs(t: int = 0, instruction: str = "open the door") -> Observation:
    rng = np.random.default_rng(t)
    return Observation(image=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                       proprio=rng.normal(size=4).astype(np.float32), instruction=instruction)


@pytest.mark.parametrize("name", POLICIES)
def test_every_policy_returns_a_finite_action_of_the_right_shape(wm: FlexWorldModelWrapper, name: str,
                                                                 tmp_path) -> None:
    kw, cfg = {}, None
    if name == "bc":
        torch.manual_seed(0)
        kw = {"bc_model": BCModel(bc_preset("tiny", image_size=(64, 64))).eval()}
    if name == "wam-steered":
        from flexwm.planning.steered import make_noise_policy

        make_noise_policy(wm, hidden=8).save_pretrained(tmp_path / "np")
        cfg = {"noise_policy": str(tmp_path / "np")}
    policy = make_policy(name, wm, cfg, action_space=BOX, budget="tiny", **kw)
    policy.reset(0)
    for t in range(3):
        a = policy.act(obs(t))
        assert a.shape == (4,) and a.dtype == np.float32 and np.all(np.isfinite(a))
        assert np.all(np.abs(a) <= 1.0)
    plan = policy.last_plan
    assert plan.seconds > 0 and plan.actions.shape[1] == 4
    if name not in ("bc", "random"):
        F = wm.horizon // wm.frame_stride
        assert plan.latents is not None and plan.latents.shape[1:] == (4, 8, 8) and plan.latents.shape[0] >= F
        frames = policy.decode(plan.latents)
        assert frames.shape == (plan.latents.shape[0], 64, 64, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("name", ["wam", "wam-seq", "best-of-n", "cem", "mppi", "grad", "hybrid"])
def test_same_seed_same_plan_with_the_flow_model(wm: FlexWorldModelWrapper, name: str) -> None:
    def run(seed: int) -> np.ndarray:
        policy = make_policy(name, wm, action_space=BOX, budget="tiny")
        policy.reset(seed)
        return np.stack([policy.act(obs(t)) for t in range(3)])

    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("extra", [{}, {"steer_noise": True}])
def test_gradients_reach_the_actions(wm: FlexWorldModelWrapper, extra: dict) -> None:
    policy = make_policy("grad", wm, {"iterations": 3, "restarts": 2, "lr": 0.5, **extra}, action_space=BOX)
    policy.reset(0)
    plan = policy.plan(obs())
    g = plan.info["grad_norm"]
    assert len(g) == 3 and all(np.isfinite(g)) and g[0] > 0
    curve = plan.info["value_curve"]
    assert curve[-1] != curve[0]  # the steps changed what the model predicts
    assert plan.score >= max(curve) - 1e-6  # the best sequence seen is kept


def test_wam_seq_decodes_actions_from_generated_frames(wm: FlexWorldModelWrapper) -> None:
    for source in ("video", "propose"):
        policy = make_policy("wam-seq", wm, {"video_source": source}, action_space=BOX)
        policy.reset(0)
        plan = policy.plan(obs())
        assert plan.actions.shape == (wm.horizon, 4) and plan.info["video_source"] == source
    # the inverse-dynamics actions depend on the generated frames
    state = wm.encode(obs().image[None])
    with torch.no_grad():
        a1 = wm.inverse(state, torch.zeros(1, 2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
        a2 = wm.inverse(state, torch.ones(1, 2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a1, a2)


def test_success_objective_scores_plans_longer_than_a_chunk(wm: FlexWorldModelWrapper) -> None:
    for frames in ("final", "all"):
        policy = make_policy("cem", wm, {"chunks": 2, "objective": {"frames": frames}}, action_space=BOX,
                             budget="tiny")
        policy.reset(0)
        plan = policy.plan(obs())
        assert plan.actions.shape == (2 * wm.horizon, 4) and plan.latents.shape[0] == 4
        assert np.isfinite(plan.score)


def test_unseen_instruction_and_no_instruction_work(wm: FlexWorldModelWrapper) -> None:
    policy = make_policy("best-of-n", wm, action_space=BOX, budget="tiny")
    for text in ("zorp the blicket sideways", ""):
        policy.reset(0)
        assert np.all(np.isfinite(policy.act(obs(instruction=text))))


def test_wrong_goal_size_and_action_dim_give_clear_errors(wm: FlexWorldModelWrapper) -> None:
    with pytest.raises(ConfigError, match="32x32.*64x64"):
        make_policy("cem", wm, {"objective": {"kind": "goal"}}, action_space=BOX,
                    goal_image=np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"4-d actions.*2-d"):
        make_policy("mppi", wm, action_space=spaces.Box(-1, 1, (2,), np.float32))
    policy = make_policy("cem", wm, {"objective": {"kind": "goal"}}, action_space=BOX, budget="tiny",
                         goal_image=obs(5).image)
    policy.reset(0)
    assert np.isfinite(policy.plan(obs()).score)


def test_video_mode_and_noise_steering_need_a_world_model_that_has_them() -> None:
    from tests.helpers.toy_planning import PointMass

    with pytest.raises(ConfigError, match="video_source='propose'"):
        make_policy("wam-seq", PointMass())
    with pytest.raises(ConfigError, match="initial noise.*steer_noise=False"):
        make_policy("grad", PointMass(), {"steer_noise": True})


def test_budget_presets_shrink_the_search_and_overrides_still_win(wm: FlexWorldModelWrapper) -> None:
    from flexwm.planning import BUDGETS, policy_config

    default, cpu = policy_config("cem"), policy_config("cem", budget="cpu")
    assert cpu.population * cpu.iterations < default.population * default.iterations
    assert policy_config("cem", {"population": 32}, budget="cpu").population == 32
    for name in ("cem", "mppi", "hybrid", "grad", "best-of-n"):  # every cpu budget builds a working policy
        policy = make_policy(name, wm, action_space=BOX, budget="cpu")
        policy.reset(0)
        assert np.all(np.isfinite(policy.act(obs())))
    assert set(BUDGETS) == {"default", "cpu", "tiny"}
    with pytest.raises(ConfigError, match="unknown policy budget 'fast'"):
        policy_config("cem", budget="fast")


def test_hybrid_agreement_picks_the_proposal_whose_video_its_actions_reproduce(wm: FlexWorldModelWrapper) -> None:
    """agreement_weight scores each WAM proposal by how closely the AC rollout of its actions matches the video the
    WAM imagined with them: with the heads weighted 0 the values are minus that distance, and the best is kept."""
    cfg = {"proposals": 4, "top_k": 2, "refine": "none", "agreement_weight": 1.0,
           "objective": {"success_weight": 0.0, "progress_weight": 0.0}}
    policy = make_policy("hybrid", wm, cfg, action_space=BOX)
    policy.reset(0)
    plan = policy.plan(obs())
    values = np.asarray(plan.info["proposal_values"])
    assert values.shape == (4,) and np.all(values < 0) and len(set(values.round(8))) > 1
    assert plan.score == pytest.approx(values.max()) and plan.info["chosen"] == "proposal"
    with pytest.raises(ConfigError, match="refine=none"):
        make_policy("hybrid", wm, {**cfg, "refine": "cem"}, action_space=BOX)
