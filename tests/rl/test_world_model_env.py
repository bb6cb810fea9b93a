import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from flexwm.data import DatasetWriter, Episode, EpisodeMeta, FlexDataset
from flexwm.errors import EnvError
from flexwm.rl import WorldModelEnv, WorldModelEnvConfig, WorldModelVecEnv
from flexwm.rl.toy import LineEnv, LineWorldModel


@pytest.mark.parametrize("cfg", [dict(), dict(obs_mode="image", action_mode="chunk", frames_per_step=2)])
def test_check_env_passes(tiny_wm, start_frames, cfg):
    env = WorldModelEnv(tiny_wm, start_frames, WorldModelEnvConfig(horizon=5, instruction="open the door", **cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded latent Box, no registered spec: warnings, not failures
        check_env(env, skip_render_check=False)
    obs, info = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and 0.0 <= info["success_prob"] <= 1.0
    if cfg:
        assert env.action_space.shape == (2 * 2 * 4,) and obs.dtype == np.uint8 and env.render().shape == (64, 64, 3)


def test_vector_step_equals_single_env_steps(tiny_wm, start_frames):
    cfg = WorldModelEnvConfig(horizon=50, terminate_on_success=False, instruction="open the door")
    n = 3
    vec = WorldModelVecEnv(tiny_wm, start_frames, n, cfg)
    singles = [WorldModelEnv(tiny_wm, start_frames, cfg) for _ in range(n)]
    vobs, _ = vec.reset(seed=10)
    sobs = [e.reset(seed=10 + i)[0] for i, e in enumerate(singles)]
    np.testing.assert_allclose(vobs, np.stack(sobs), atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(4):
        actions = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        vobs, vrew, vterm, vtrunc, vinfo = vec.step(actions)
        outs = [e.step(a) for e, a in zip(singles, actions)]
        np.testing.assert_allclose(vobs, np.stack([o[0] for o in outs]), atol=1e-5)
        np.testing.assert_allclose(vrew, [o[1] for o in outs], atol=1e-5)
        np.testing.assert_allclose(vinfo["success_prob"], [o[4]["success_prob"] for o in outs], atol=1e-5)
    assert not np.allclose(vobs[0], vobs[1])  # the envs differ: the comparison is not trivially equal
    # the actions matter: the same start and seed under other actions imagines something else
    other = WorldModelEnv(tiny_wm, start_frames, cfg)
    other.reset(seed=10)
    for _ in range(4):
        o = other.step(np.ones(4, np.float32))[0]
    assert np.abs(o - vobs[0]).max() > 5e-4  # 50x the tolerance above


def test_memory_is_bounded_over_a_long_episode(tiny_wm, start_frames):
    env = WorldModelEnv(tiny_wm, start_frames, WorldModelEnvConfig(horizon=1000, terminate_on_success=False))
    env.reset(seed=0)
    shapes = set()
    for _ in range(150):
        env.step(env.action_space.sample())
        shapes.add((tuple(env.imagination.window.shape), tuple(env.imagination.context.shape)))
    C, F = tiny_wm.model.cfg.context_frames, tiny_wm.model.cfg.future_frames
    assert shapes == {((1, C + F, 4, 8, 8), (1, C, 4, 8, 8))}


def _dataset(root, size, firsts):
    with DatasetWriter(root, fps=10, image_size=size, action_dim=4, proprio_dim=4, state_dim=2, embodiment="sawyer",
                       action_low=[-1.0] * 4, action_high=[1.0] * 4) as w:
        for i, level in enumerate(firsts):
            T = 3
            w.add(Episode(frames=np.full((T, *size, 3), level, np.uint8), proprio=np.zeros((T, 4), np.float32),
                          actions=np.zeros((T, 4), np.float32), success=np.zeros(T, bool),
                          state=np.zeros((T, 2), np.float32),
                          meta=EpisodeMeta(embodiment="sawyer", task="door-open-v3", instruction="open the door",
                                           outcome="failure", source="noisy", noise=0.3, seed=i)))
    return FlexDataset(root)


def test_reset_from_dataset_frames_and_clear_size_errors(tiny_wm, tmp_path):
    ds = _dataset(tmp_path / "ds", (64, 64), [40, 200])
    env = WorldModelEnv(tiny_wm, ds, WorldModelEnvConfig(horizon=3))
    obs, _ = env.reset(seed=0, options={"episode": 1})
    with torch.no_grad():
        want = tiny_wm.encode(ds.load_episode(1).frames[:1]).context[0].numpy()
        other = tiny_wm.encode(ds.load_episode(0).frames[:1]).context[0].numpy()
    np.testing.assert_allclose(obs, want, atol=1e-5)
    assert np.abs(obs - other).max() > 1e-3
    # frames given at reset override the source
    frame = np.full((64, 64, 3), 90, np.uint8)
    obs, _ = env.reset(options={"frames": frame})
    np.testing.assert_allclose(obs, tiny_wm.encode(frame[None]).context[0].detach().numpy(), atol=1e-5)
    with pytest.raises(EnvError, match="32x32.*expects 64x64"):
        env.reset(options={"frames": np.zeros((32, 32, 3), np.uint8)})
    with pytest.raises(EnvError, match=r"32x32 frames but the world model expects 64x64"):
        WorldModelEnv(tiny_wm, _dataset(tmp_path / "small", (32, 32), [10]))
    with pytest.raises(EnvError, match="no start frames"):
        WorldModelEnv(tiny_wm).reset(seed=0)


def test_reset_from_a_live_simulator_uses_its_seeded_first_frame():
    wm, sim = LineWorldModel(), LineEnv()
    env = WorldModelEnv(wm, sim)
    obs, info = env.reset(seed=0, options={"sim_seed": 3})
    assert obs.reshape(-1)[0] == pytest.approx(LineEnv().reset(3).proprio[0], abs=1e-6)
    assert env.action_space.shape == (4,)


def test_action_space_mismatch_is_a_clear_error(tiny_wm, start_frames):
    with pytest.raises(EnvError, match=r"2-d actions but the world model .* expects 4-d"):
        WorldModelEnv(tiny_wm, LineEnv(action_dim=2))
    env = WorldModelEnv(tiny_wm, start_frames)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"expects actions of shape \(4,\).*got \(3,\)"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(EnvError, match="non-finite"):
        env.step(np.full(4, np.nan, np.float32))


def test_reward_termination_and_truncation_on_the_exact_toy_model():
    wm = LineWorldModel()  # x += 0.05 (a + 1) per native action, 2 actions per step; success when x > 0.5
    start = np.full((1, 64, 64, 3), 107, np.uint8)  # x = -0.2
    env = WorldModelEnv(wm, start, WorldModelEnvConfig(horizon=10))
    _, info = env.reset(seed=0)
    p0, total, steps, terminated = info["success_prob"], 0.0, 0, False
    while not terminated:
        _, r, terminated, truncated, info = env.step(np.ones(4, np.float32))
        total, steps = total + r, steps + 1
    assert steps == 4 and not truncated and info["success_prob"] > 0.5  # x = -0.2 + 4 * 0.2 = 0.6
    assert total == pytest.approx(info["success_prob"] - p0)  # success_delta telescopes
    with pytest.raises(EnvError, match="call reset"):
        env.step(np.ones(4, np.float32))
    env.reset(seed=0)
    for _ in range(10):  # action -1 does not move: never succeeds, truncated at the horizon
        _, r, terminated, truncated, _ = env.step(-np.ones(4, np.float32))
    assert truncated and not terminated and r == pytest.approx(0.0)


def test_vector_env_autoresets_in_the_same_step():
    wm = LineWorldModel()
    vec = WorldModelVecEnv(wm, np.full((1, 64, 64, 3), 107, np.uint8), 2, WorldModelEnvConfig(horizon=10))
    vec.reset(seed=0)
    for _ in range(4):
        obs, _, term, _, infos = vec.step(np.array([[1, 0, 0, 0], [-1, 0, 0, 0]], np.float32))
    assert term.tolist() == [True, False]
    assert infos["final_obs"][0].reshape(-1)[0] == pytest.approx(0.6) and infos["final_info"]["is_success"][0]
    assert obs[0].reshape(-1)[0] == pytest.approx(-0.2) and obs[1].reshape(-1)[0] == pytest.approx(-0.2)
