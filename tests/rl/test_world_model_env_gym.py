"""The world model registered with gymnasium: gymnasium.make("flexwm/WorldModel-v0", ckpt=...) gives an env with a
spec, metadata["render_fps"] and close() that passes gymnasium's env checker; episodes can start from any
simulator, a gymnasium env included; registration is lazy (no torch on `import flexwm`)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from flexwm.envs import make_env
from flexwm.errors import ConfigError, EnvError
from flexwm.rl import WorldModelEnv
from tests.helpers.paths import REPO
from tests.helpers.toy_gym import ENV_ID

TOY = f"gym:{ENV_ID}"
ID = "flexwm/WorldModel-v0"


def test_registration_is_lazy_and_needs_no_torch():
    code = ("import sys, gymnasium, flexwm; print('flexwm/WorldModel-v0' in gymnasium.registry, 'torch' in "
            "sys.modules, gymnasium.spec('flexwm/WorldModel-v0').entry_point)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False", "flexwm.rl.world_model_env:make_world_model_env"]
    assert ID in gym.registry  # this process imported flexwm.rl


def test_gym_make_passes_the_env_checker(tiny_wm, start_frames):
    env = gym.make(ID, ckpt=tiny_wm, start=start_frames, horizon=3, obs_mode="image", render_mode="rgb_array")
    assert env.spec.id == ID and env.spec.kwargs["horizon"] == 3
    assert env.metadata["render_fps"] == 10 / tiny_wm.frame_stride  # one step imagines frame_stride native actions
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning
        check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and env.render().shape == (64, 64, 3)
    env.close()
    latent = gym.make(f"flexwm.rl:{ID}", ckpt=tiny_wm, start=start_frames, config={"horizon": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the latent Box is unbounded: a warning, not a failure
        check_env(latent.unwrapped)
    assert latent.unwrapped.config.horizon == 2


def test_a_gymnasium_simulator_as_the_start_of_imagined_episodes(tiny_wm):
    sim = make_env(TOY, "ToyReach-v0", image_size=(64, 64), env_options={"pixels": "render"})
    env = WorldModelEnv(tiny_wm, start=sim)
    assert env.metadata["render_fps"] == 15 / tiny_wm.frame_stride
    env.reset(seed=0, options={"sim_seed": 3})
    assert env.imagination.instructions[0] == "ToyReach-v0"  # the simulator's instruction: its task name
    assert env.step(np.zeros(4, np.float32))[0].shape == env.observation_space.shape
    sim.close()


def test_bad_arguments_are_clear(tiny_wm, start_frames):
    with pytest.raises(ConfigError, match=r"horizn.*Did you mean 'horizon'"):
        gym.make(ID, ckpt=tiny_wm, start=start_frames, horizn=3)
    with pytest.raises(EnvError, match="one start"):
        gym.make(ID, ckpt=tiny_wm, start=start_frames, env=TOY)
    with pytest.raises(ConfigError, match="needs ckpt"):
        gym.make(ID, ckpt=None)
    with pytest.raises(EnvError, match="render_mode"):
        gym.make(ID, ckpt=tiny_wm, start=start_frames, render_mode="human")
