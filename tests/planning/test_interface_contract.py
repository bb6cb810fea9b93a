"""A second world model drives planning, RL and evaluation through the WorldModel interface alone.

`PointMass` (tests/helpers/toy_planning.py) is a hand-written class, not a FlexWorldModel: linear latent dynamics, a
success
score from the distance to a goal latent, a two-colour "tokenizer". Every planner, the gymnasium envs, noise
steering and policy evaluation in imagination run on it, so none of them reaches past the interface.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from flexwm.evaluation.policy_eval import evaluate_suite
from flexwm.evaluation.simulator import instruction_seen_in_training
from flexwm.models.interface import CAPABILITIES, WorldModel
from flexwm.planning import POLICIES, make_policy
from flexwm.planning.steered import make_noise_policy
from flexwm.rl import WorldModelEnv, WorldModelEnvConfig, WorldModelVecEnv
from tests.helpers.toy_planning import PointMass, PointMassEnv, observation, render

torch.set_num_threads(1)
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
WM_POLICIES = [p for p in POLICIES if p != "bc"]  # bc acts without a world model


def full_toy(**kw) -> PointMass:
    return PointMass(capabilities=CAPABILITIES, **kw)


def test_the_toy_is_a_world_model_and_not_a_network() -> None:
    wm = full_toy()
    assert isinstance(wm, WorldModel) and not isinstance(wm, torch.nn.Module)
    assert not hasattr(wm, "model") and not hasattr(wm, "steps")  # nothing to reach into, no steps to change


@pytest.mark.parametrize("name", WM_POLICIES)
def test_every_planner_runs_on_the_toy_through_make_policy(name: str, tmp_path) -> None:
    wm, cfg = full_toy(), {}
    if name == "wam-steered":
        make_noise_policy(wm, hidden=8).save_pretrained(tmp_path / "np")
        cfg = {"noise_policy": str(tmp_path / "np")}
    policy = make_policy(name, wm, cfg, action_space=BOX, budget="tiny")
    policy.reset(0)
    for t in range(4):
        a = policy.act(observation((0.1 * t, -0.1 * t)))
        assert a.shape == (2,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
    if name != "random":
        plan = policy.last_plan
        assert plan.latents is not None and plan.latents.shape[1:] == wm.latent_shape
        assert policy.decode(plan.latents).shape == (plan.latents.shape[0], 8, 8, 3)


@pytest.mark.parametrize("name,cfg", [
    ("wam", {}), ("wam-seq", {"video_source": "video"}), ("best-of-n", {"resimulate": True}), ("cem", {}),
    ("mppi", {}), ("hybrid", {}), ("grad", {}), ("grad", {"steer_noise": True}),
])
def test_flow_steps_reach_every_model_call_as_an_argument(name: str, cfg: dict) -> None:
    wm = full_toy()
    policy = make_policy(name, wm, {**cfg, "flow_steps": 3}, action_space=BOX, budget="tiny")
    policy.reset(0)
    policy.act(observation())
    assert wm.steps_seen and set(wm.steps_seen) == {3}
    wm.steps_seen.clear()
    default = make_policy(name, wm, {**cfg, "flow_steps": None}, action_space=BOX, budget="tiny")
    default.reset(0)
    default.act(observation())
    assert set(wm.steps_seen) == {None}  # None: the model's own default


def test_video_mode_and_noise_steering_follow_the_capabilities() -> None:
    obs = observation()
    for name, cfg in [("wam-seq", {"video_source": "video"}), ("grad", {"steer_noise": True})]:
        policy = make_policy(name, full_toy(), cfg, action_space=BOX, budget="tiny")
        policy.reset(0)
        assert np.all(np.isfinite(policy.act(obs)))
    steered = make_policy("grad", full_toy(), {"steer_noise": True, "iterations": 5, "restarts": 4, "lr": 0.3},
                          action_space=BOX)
    steered.reset(0)
    curve = steered.plan(obs).info["value_curve"]
    assert curve[-1] > curve[0]  # gradients through propose(noise=) reach the noise


def test_cem_beats_random_and_imagination_ranks_policies_as_the_simulator_does(tmp_path) -> None:
    """Policy evaluation in imagination with the toy: closed loop for the planners, open-loop replay for the
    expert; the toy's dynamics are the simulator's, so imagined and real success rates agree closely."""
    suite = [{"name": "expert", "kind": "expert"}, {"name": "random", "kind": "random"},
             {"name": "cem", "kind": "flexwm", "mode": "cem", "config": {"population": 32, "iterations": 3}},
             {"name": "wam", "kind": "flexwm", "mode": "wam"}]
    result = evaluate_suite(suite, full_toy(), env=PointMassEnv(), episodes=8, seed=0, out_dir=tmp_path)
    real = {p["name"]: p["real"]["rate"] for p in result["policies"]}
    imagined = {p["name"]: p["imagined"]["rate"] for p in result["policies"]}
    assert real["cem"] >= real["random"] + 0.5 and imagined["cem"] >= imagined["random"] + 0.5, (real, imagined)
    assert real["expert"] >= 0.75 and imagined["expert"] >= 0.75
    assert all(abs(real[k] - imagined[k]) <= 0.25 for k in real), (real, imagined)
    assert result["imagined_frames"] == 6 and (tmp_path / "policy_eval.json").exists()


def test_world_model_env_passes_the_gymnasium_checks_on_the_toy() -> None:
    starts = np.stack([render((x, y)) for x, y in [(0.0, 0.0), (-0.4, 0.2), (0.2, -0.2)]])
    for mode in ("latent", "image"):
        env = WorldModelEnv(full_toy(), start=starts, config=WorldModelEnvConfig(horizon=6, obs_mode=mode))
        check_env(env, skip_render_check=True)
    env = WorldModelEnv(full_toy(), start=starts, config=WorldModelEnvConfig(horizon=20))
    obs, info = env.reset(seed=0)
    assert obs.shape == (1, 2, 1, 1) and env.action_space.shape == (2,)
    goal, rewards, terminated = np.array([0.6, -0.6]), [], False
    while not terminated:  # steer at the goal, seen in the latent observation (the position)
        d = goal - obs.reshape(2)
        obs, r, terminated, truncated, info = env.step((d / max(np.linalg.norm(d), 0.2)).astype(np.float32))
        rewards.append(r)
        assert not truncated
    assert info["is_success"] and sum(rewards) > 0.4  # success_delta rewards sum to the gain in P(success)


def test_vector_env_row_i_is_the_single_env_seeded_s_plus_i() -> None:
    starts = np.stack([render((x, 0.0)) for x in (-0.6, -0.3, 0.0, 0.3)])
    cfg = WorldModelEnvConfig(horizon=5, terminate_on_success=False)
    vec = WorldModelVecEnv(full_toy(), start=starts, num_envs=3, config=cfg)
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 3, 2)).astype(np.float32)
    obs, _ = vec.reset(seed=7)
    vec_obs = [obs]
    for a in actions:
        vec_obs.append(vec.step(a)[0])
    for i in range(3):
        env = WorldModelEnv(full_toy(), start=starts, config=cfg)
        single = [env.reset(seed=7 + i)[0]]
        for a in actions:
            single.append(env.step(a[i])[0])
        np.testing.assert_allclose(np.stack(single), np.stack([o[i] for o in vec_obs]), atol=1e-6)


def test_noise_steering_rl_runs_in_the_toys_imagination() -> None:
    from flexwm.rl.noise_rl import NoiseRLConfig, steer_wam

    cfg = NoiseRLConfig(iterations=2, starts=2, samples=2, max_steps=8, updates=3, batch_size=4, hidden=8, seed=0)
    pol, log = steer_wam(full_toy(), "reach", cfg, imagine=True, env=PointMassEnv())
    assert log["backend"] == "imagination" and len(log["iterations"]) == 2
    assert pol.config["context_shape"] == [1, 2, 1, 1]


def test_whether_an_instruction_was_trained_on_comes_from_the_model() -> None:
    wm = PointMass(known_instructions={"reach the goal"})
    assert instruction_seen_in_training(wm, "reach the goal") is True
    assert instruction_seen_in_training(wm, "zorp") is False
    assert instruction_seen_in_training(PointMass(), "reach the goal") is None
    assert instruction_seen_in_training(None, "reach the goal") is None
