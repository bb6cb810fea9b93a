"""Steering the WAM by RL over its initial noise: starts as the WAM itself, learns in the real toy simulator,
runs batched in imagination, saves and loads, and rejects mismatched input."""

import numpy as np
import pytest
import torch

from flexwm.errors import ConfigError
from flexwm.planning.steered import NoisePolicy, make_noise_policy, steered_wam_policy
from flexwm.rl.noise_rl import NoiseRLConfig, steer_wam
from flexwm.rl.toy import LineEnv


def real_success(wm, pol, seeds, steps=14) -> float:
    env, policy, ok = LineEnv(max_episode_steps=steps), steered_wam_policy(wm, pol), []
    for s in seeds:
        policy.reset(s)
        obs = env.reset(s)
        for _ in range(steps):
            res = env.step(policy.act(obs))
            obs = res.observation
            if res.success or res.done:
                break
        ok.append(res.success)
    return float(np.mean(ok))


def test_untrained_noise_policy_is_the_wam(tiny_wm, start_frames):
    pol = make_noise_policy(tiny_wm, hidden=32)
    ctx = tiny_wm.encode(start_frames[:2]).context
    assert torch.equal(pol(ctx), torch.zeros(2, tiny_wm.horizon, tiny_wm.action_dim))
    # the planner's draw (action noise, then video noise, from the policy's generator) fed to the WAM directly
    policy = steered_wam_policy(tiny_wm, pol)
    plan = policy.planner.plan(start_frames[:1], None, "reach the goal", torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    z = torch.randn((1, tiny_wm.horizon, tiny_wm.action_dim), generator=g)
    F = tiny_wm.horizon // tiny_wm.frame_stride
    video = torch.randn((1, F, *ctx.shape[2:]), generator=g)
    with torch.no_grad():
        want, _ = tiny_wm.propose(tiny_wm.encode(start_frames[:1]), "reach the goal", 1,
                                  noise={"video": video[:, None], "actions": z[:, None]})
    np.testing.assert_allclose(plan.actions, want[0, 0].numpy(), atol=1e-5)


def test_real_rl_over_the_noise_improves_real_success(tiny_wm):
    seeds = range(100, 130)
    pol0 = make_noise_policy(tiny_wm, hidden=64)
    before = real_success(tiny_wm, pol0, seeds)
    cfg = NoiseRLConfig(iterations=4, starts=4, samples=4, max_steps=14, updates=40, batch_size=32, lr=3e-3,
                        hidden=64, seed=0)
    pol, log = steer_wam(tiny_wm, "reach", cfg, imagine=False, env=LineEnv(max_episode_steps=14), policy=pol0)
    after = real_success(tiny_wm, pol, seeds)
    assert before < 0.7 and after >= before + 0.2, (before, after, log["iterations"])
    assert log["backend"] == "real" and all(r["rollouts"] == 16 for r in log["iterations"])
    assert real_success(tiny_wm, pol0, seeds) == before  # the given policy is left as it was


def test_imagined_backend_and_round_trip(tiny_wm, tmp_path):
    cfg = NoiseRLConfig(iterations=2, starts=2, samples=2, max_steps=8, updates=3, batch_size=8, hidden=16, seed=1,
                        success_threshold=1.0)
    pol, log = steer_wam(tiny_wm, "reach", cfg, imagine=True, env=LineEnv(max_episode_steps=8))
    assert log["backend"] == "imagination"
    assert [r["decisions"] for r in log["iterations"]] == [4 * 8 // tiny_wm.frame_stride] * 2
    pol.save_pretrained(tmp_path / "np")
    again = NoisePolicy.from_pretrained(tmp_path / "np")
    from flexwm.planning import make_policy

    steered = make_policy("wam-steered", tiny_wm, {"noise_policy": str(tmp_path / "np")})
    steered.reset(0)
    assert steered.act(LineEnv().reset(0)).shape == (tiny_wm.action_dim,)
    with pytest.raises(ConfigError, match="noise_policy=DIR"):
        make_policy("wam-steered", tiny_wm)
    ctx = torch.randn(3, *pol.config["context_shape"])
    assert torch.equal(pol(ctx), again(ctx))
    with pytest.raises(ConfigError, match="context latents"):
        pol(torch.randn(3, 7))
    with pytest.raises(ConfigError, match="2-d actions"):
        steer_wam(tiny_wm, "reach", cfg, env=LineEnv(action_dim=2))
    with pytest.raises(ConfigError, match="multiple of frame_stride"):
        steer_wam(tiny_wm, "reach", NoiseRLConfig(execute=3), env=LineEnv())
    with pytest.raises(ConfigError, match="not a noise-policy"):
        from flexwm.io import save_pretrained_dir

        save_pretrained_dir(tmp_path / "other", pol.state_dict(), {"something": 1})
        NoisePolicy.from_pretrained(tmp_path / "other")
