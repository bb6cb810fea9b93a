import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import VecMonitor  # noqa: E402

from flexwm.rl import WorldModelEnvConfig, WorldModelVecEnv  # noqa: E402
from flexwm.rl.sb3 import SB3VecEnv  # noqa: E402
from flexwm.rl.toy import LineWorldModel  # noqa: E402


def test_ppo_trains_in_the_tiny_world_model(tiny_wm, start_frames):
    torch.set_num_threads(1)
    cfg = WorldModelEnvConfig(horizon=8, instruction="open the door")
    venv = VecMonitor(SB3VecEnv(WorldModelVecEnv(tiny_wm, start_frames, 8, cfg)))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=128, n_epochs=2, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[32]))
    model.learn(1024)
    assert model.num_timesteps >= 1024
    assert len(model.ep_info_buffer) > 0  # episodes ended (terminated or truncated) and were reset
    assert all(1 <= ep["l"] <= 8 for ep in model.ep_info_buffer)


def _success_rate(policy, venv, episodes=32) -> float:
    obs, done_eps, wins = venv.reset(), 0, 0
    while done_eps < episodes:
        actions = policy(obs)
        obs, _, dones, infos = venv.step(actions)
        for d, info in zip(dones, infos):
            if d:
                done_eps, wins = done_eps + 1, wins + bool(info["is_success"])
    return wins / done_eps


def test_ppo_learns_the_toy_task_in_imagination():
    """Exact toy model: reach x > 0.5 from x = -0.2 within 5 steps (needs mean action > 0.4). PPO on the default
    reward (success_delta) learns it in 4096 steps (checked for seeds 0-5); random succeeds ~6% of the time."""
    torch.set_num_threads(1)
    cfg = WorldModelEnvConfig(horizon=5)
    make = lambda: SB3VecEnv(WorldModelVecEnv(LineWorldModel(), np.full((1, 64, 64, 3), 107, np.uint8), 16,  # noqa: E731
                                              cfg))
    rng = np.random.default_rng(0)
    random_rate = _success_rate(lambda o: rng.uniform(-1, 1, (16, 4)).astype(np.float32), make())
    model = PPO("MlpPolicy", make(), n_steps=16, batch_size=64, learning_rate=1e-3, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[16]))
    model.learn(4096)
    ppo_rate = _success_rate(lambda o: model.predict(o, deterministic=True)[0], make())
    assert random_rate < 0.2 and ppo_rate > 0.9, (random_rate, ppo_rate)
