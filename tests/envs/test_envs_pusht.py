"""PushT adapter and its expert on the real simulator."""

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from flexwm.envs import make_env, make_scripted_policy, run_episode  # noqa: E402
from flexwm.envs.pusht import PushTEnv  # noqa: E402
from flexwm.envs.pusht_expert import coverage, t_polygon  # noqa: E402
from flexwm.errors import EnvError  # noqa: E402


@pytest.mark.parametrize("size", [(64, 64), (96, 96)])
def test_observation_shapes_and_state(size):
    env = make_env("pusht", "pusht", image_size=size, max_episode_steps=2)
    obs = env.reset(0)
    assert obs.image.shape == (*size, 3) and obs.image.dtype == np.uint8
    assert obs.proprio.shape == (2,) and obs.proprio.dtype == np.float32
    state = env.privileged_state()
    assert state.shape == (10,) and state.dtype == np.float32
    np.testing.assert_array_equal(state[:2], obs.proprio)
    np.testing.assert_allclose(state[5:8], [256, 256, np.pi / 4], rtol=1e-6)  # the goal pose
    assert 0 <= state[4] < 2 * np.pi
    assert env.action_space.shape == (2,) and env.action_space.high[0] == 512
    assert obs.instruction == env.instruction and "T" in obs.instruction
    assert not env.step(state[:2]).done and env.step(state[:2]).done


def test_seeding_is_deterministic():
    env = PushTEnv()
    a = env.reset(7)
    sa = env.privileged_state()
    env.step(np.array([100.0, 100.0]))
    b = env.reset(8)
    sb = env.privileged_state()
    c = env.reset(7)
    np.testing.assert_array_equal(a.image, c.image)
    np.testing.assert_array_equal(sa, env.privileged_state())
    assert not np.allclose(sa[:5], sb[:5]) and not np.array_equal(a.image, b.image)


def test_image_matches_the_state():
    """The pusher is drawn where the state says (x -> column, y -> row), and the outline helper matches the
    simulator's own block geometry."""
    env = PushTEnv(image_size=(96, 96))
    for seed in range(3):
        obs = env.reset(seed)
        img = obs.image.astype(int)
        blue = (img[..., 2] > 190) & (img[..., 0] < 100)  # the royal-blue pusher (the block is slate grey)
        rows, cols = np.nonzero(blue)
        x, y = env.privileged_state()[:2] / 512 * 96
        assert abs(cols.mean() - x) < 2.5 and abs(rows.mean() - y) < 2.5
        sim = env.sim
        kp = sim.get_keypoints(sim._block_shapes)
        ours = t_polygon(np.array(sim.block.position), sim.block.angle)
        assert np.abs(np.sort(kp, axis=0) - np.sort(ours, axis=0)).max() < 1e-6
        assert coverage(np.array(sim.block.position), sim.block.angle, sim.goal_pose) == pytest.approx(
            sim._get_coverage(), abs=1e-9)


def test_expert_succeeds_and_play_moves_the_block():
    env = PushTEnv(max_episode_steps=200, terminate_on_success=True)
    ep = run_episode(env, make_scripted_policy("expert", env), seed=0)
    assert ep.meta.outcome == "success" and ep.success[-1] and ep.length < 200
    again = run_episode(env, make_scripted_policy("expert", env), seed=0)
    np.testing.assert_array_equal(ep.actions, again.actions)  # deterministic
    env = PushTEnv(max_episode_steps=120)
    moved = []
    for seed in range(3):
        play = run_episode(env, make_scripted_policy("play", env, seed=seed), seed=seed, source="play")
        assert play.meta.outcome == "play" and play.meta.instruction == ""
        block = play.state[:, 2:4]
        assert np.all((block > 0) & (block < 512)), "the block left the arena"
        moved.append(np.linalg.norm(block - block[0], axis=1).max())
    assert sum(m > 20 for m in moved) >= 2, moved


def test_noisy_expert_at_high_noise_fails_and_is_recorded():
    env = PushTEnv(max_episode_steps=40)
    ep = run_episode(env, make_scripted_policy("noisy", env, noise=1.0, seed=0), seed=0, source="noisy", noise=1.0)
    assert ep.meta.outcome == "failure" and ep.length == 40 and ep.meta.noise == 1.0
    assert np.all((ep.actions >= 0) & (ep.actions <= 512))


def test_bad_actions_are_clear_errors():
    env = PushTEnv()
    env.reset(0)
    with pytest.raises(EnvError, match=r"shape \(2,\), got \(4,\)"):
        env.step(np.zeros(4))
    with pytest.raises(EnvError, match="non-finite"):
        env.step(np.array([np.inf, 3.0]))
    with pytest.raises(EnvError, match="only task is 'pusht'"):
        make_env("pusht", "push-t")


def test_evaluation_reports_pusht_coverage_per_episode() -> None:
    from flexwm.evaluation.simulator import evaluate_policy
    from flexwm.planning import make_policy

    policy = make_policy("random", action_space=make_env("pusht", "pusht", max_episode_steps=2).action_space)
    res = evaluate_policy(policy, "pusht", "pusht", episodes=2, seed=3, max_steps=5, instruction_split="canonical")
    cov = [r["max_coverage"] for r in res["per_episode"]]
    assert len(cov) == 2 and all(0.0 <= c <= 1.0 for c in cov)
    assert res["mean_max_coverage"] == pytest.approx(sum(cov) / 2)
    assert res["max_coverage_ci95"][0] <= res["mean_max_coverage"] <= res["max_coverage_ci95"][1]
