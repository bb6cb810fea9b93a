"""Any gymnasium environment as a simulator (`--env gym:ENV_ID`): pixels, proprioception, success and instructions
read as configured, frames resized, episodes recorded and collected; bad input is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from flexwm.envs import check_env_name, embodiment_of, list_tasks, make_env, make_scripted_policy, run_episode
from flexwm.envs.gymnasium_env import GymEnvConfig, gym_instructions, parse_env_options, to_image
from flexwm.errors import ConfigError, EnvError
from tests.helpers.toy_gym import ENV_ID

TOY = f"gym:{ENV_ID}"  # registered by importing tests.helpers.toy_gym: flexwm has no code for it
DICT_OPTS = {"pixels": "image", "proprio": "agent_pos"}


def toy(image_size=(32, 24), **options):
    return make_env(TOY, "ToyReach-v0", image_size=image_size, env_options={**DICT_OPTS, **options})


def test_names_task_and_embodiment_come_from_the_id():
    assert list_tasks(TOY) == ["ToyReach-v0"] and embodiment_of(TOY) == "gym-toyreach-v0"
    assert list_tasks("gym:ALE/Pong-v5") == ["ALE-Pong-v5"] and embodiment_of("gym:Pendulum-v1") == "gym-pendulum-v1"
    assert embodiment_of("metaworld") == "sawyer" and check_env_name("gym:Pendulum-v1") == "gym:Pendulum-v1"


def test_dict_observation_pixels_proprio_success_and_resizing():
    env = toy()
    try:
        assert (env.embodiment, env.task, env.fps, env.max_episode_steps) == ("gym-toyreach-v0", "ToyReach-v0", 15, 30)
        assert env.instruction == "ToyReach-v0" and env.proprio_dim == 2 and env.action_space.shape == (4,)
        obs = env.reset(3)
        raw = env.sim.unwrapped
        assert obs.image.shape == (32, 24, 3) and obs.image.dtype == np.uint8  # 48x48 observation image, resized
        np.testing.assert_array_equal(obs.proprio, raw.pos)
        np.testing.assert_array_equal(env.privileged_state(), np.concatenate([raw.pos, raw.goal]))  # no image
        np.testing.assert_array_equal(env.reset(3).image, obs.image)  # the seed fixes the episode
        assert not np.array_equal(env.reset(4).image, obs.image)
        env.reset(3)
        for t in range(30):  # noqa: B007 - steer straight at the goal (read from the privileged state)
            state = env.privileged_state()
            step = np.clip((state[2:] - state[:2]) / 0.2, -1, 1)
            result = env.step(np.array([*step, 0.0, 0.0], np.float32))
            if result.success or result.done:
                break
        assert result.success and result.info["distance"] < 0.2 and result.reward <= 0
        assert t < 29 and not result.done  # success does not end the episode
        assert [env.step(np.zeros(4, np.float32)).done for _ in range(29 - t)][-1]  # the spec's 30-step limit
    finally:
        env.close()


def test_render_pixels_and_a_box_observation_as_proprio():
    env = make_env("gym:Pendulum-v1", "Pendulum-v1", image_size=(16, 16), max_episode_steps=5)
    try:
        obs = env.reset(0)
        assert obs.image.shape == (16, 16, 3) and env.fps == 30 and env.action_space.shape == (1,)
        np.testing.assert_allclose(obs.proprio, env.sim.unwrapped._get_obs(), atol=1e-6)  # the Box observation
        assert env.proprio_dim == 3 and obs.image.std() > 0
        results = [env.step(np.array([2.0], np.float32)) for _ in range(5)]
        assert [r.done for r in results] == [False] * 4 + [True] and not any(r.success for r in results)
        with pytest.raises(EnvError, match="episode is over"):
            env.step(np.array([0.0], np.float32))
    finally:
        env.close()
    rendered = toy(image_size=(20, 20), pixels="render")  # render() is 40 x 56: resized to 20 x 20
    assert rendered.reset(0).image.shape == (20, 20, 3)
    rendered.close()


def test_to_image_converts_layouts_and_types():
    chw = np.random.default_rng(0).random((3, 10, 12))
    out = to_image(chw, (10, 12), "test")
    assert out.dtype == np.uint8 and out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, np.rint(chw.transpose(1, 2, 0) * 255).astype(np.uint8))
    grey = to_image(np.full((6, 6), 7, np.uint8), (3, 3), "test")
    assert grey.shape == (3, 3, 3) and np.all(grey == 7)
    same = np.zeros((5, 5, 3), np.uint8)
    out = to_image(same, (5, 5), "test")
    assert out.shape == (5, 5, 3) and out.flags.writeable and not np.shares_memory(out, same)
    assert to_image(np.zeros((5, 5, 4), np.uint8), (5, 5), "test").shape == (5, 5, 3)
    assert to_image(np.zeros((9, 9, 3), np.uint8), (5, 5), "test").flags.writeable  # resized too
    with pytest.raises(EnvError, match="not an image"):
        to_image(np.zeros(5), (5, 5), "the thing")


def test_success_key_options():
    env = toy(success="terminated", kwargs={"terminate": True, "goal_radius": 2.0})  # the first step reaches it
    env.reset(0)
    result = env.step(np.zeros(4, np.float32))
    assert result.success and result.done
    env.close()
    env = toy(success="no_such_key")
    env.reset(0)
    with pytest.raises(EnvError, match=r"no success key 'no_such_key'.*\['distance', 'is_success'\]"):
        env.step(np.zeros(4, np.float32))
    env.close()


def test_kwargs_and_instructions(tmp_path):
    env = toy(kwargs={"speed": 0.5}, instructions="reach the green dot")
    assert env.sim.unwrapped.speed == 0.5 and env.instruction == "reach the green dot"
    assert env.instructions("eval") == ["reach the green dot"]
    env.close()
    (tmp_path / "i.json").write_text(json.dumps({"ToyReach-v0": ["go to the goal", "touch the dot"]}))
    (tmp_path / "i.txt").write_text("go to the goal\n\ntouch the dot\n")
    (tmp_path / "i.yaml").write_text("- go to the goal\n- touch the dot\n")
    for name in ("i.json", "i.txt", "i.yaml"):
        assert gym_instructions("ToyReach-v0", str(tmp_path / name)) == ["go to the goal", "touch the dot"]
    assert gym_instructions("ToyReach-v0", None) == ["ToyReach-v0"]
    with pytest.raises(ConfigError, match="no entry for task 'Other-v0'"):
        gym_instructions("Other-v0", str(tmp_path / "i.json"))
    with pytest.raises(ConfigError, match="does not exist"):
        gym_instructions("ToyReach-v0", str(tmp_path / "missing.json"))


@pytest.mark.parametrize("env, task, options, error, fragments", [
    ("gym:CartPole-v1", "CartPole-v1", {}, EnvError, ["discrete action space", "continuous", "ActionWrapper"]),
    ("gym:CartPol-v1", "CartPol-v1", {}, EnvError, ["no environment 'CartPol-v1'", "CartPole-v1"]),
    ("gym:no_such_module:X-v0", "X-v0", {}, EnvError, ["no_such_module"]),
    ("gym:", "", {}, EnvError, ["gym:ENV_ID"]),
    (TOY, "ToyReach-v0", {"pixels": "img"}, EnvError, ["no pixel key 'img'", "['agent_pos', 'goal', 'image']"]),
    (TOY, "ToyReach-v0", {"pixels": "image", "proprio": "pos"}, EnvError, ["no proprio key 'pos'", "agent_pos"]),
    (TOY, "ToyReach-v0", {"pixel": "image"}, ConfigError, ["'pixel'", "Did you mean 'pixels'", "Valid keys"]),
    (TOY, "ToyReach-v0", {"kwargs": {"sped": 1}}, EnvError, ["sped", "kwargs.NAME"]),
    (TOY, "ToyReach-v0", {"kwargs": {"render_mode": "human"}}, EnvError, ["rgb_array"]),
    (TOY, "reach-v3", {}, EnvError, ["one task, 'ToyReach-v0'"]),
    ("gym:Pendulum-v1", "Pendulum-v1", {"proprio": "x"}, EnvError, ["not a Dict", "none"]),
    ("pusht", "pusht", {"pixels": "image"}, EnvError, ["gym:ENV_ID environments only"]),
    ("gm:Pendulum-v1", "x", {}, EnvError, ["unknown simulator", "gym:ENV_ID"]),
])
def test_bad_input_names_the_problem_and_the_fix(env, task, options, error, fragments):
    with pytest.raises(error) as e:
        make_env(env, task, env_options=options).close()
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_env_set_options_parse_and_check():
    cfg = parse_env_options(["pixels=image", "kwargs.speed=0.5", "kwargs.terminate=true", "fps=20"])
    assert cfg == GymEnvConfig(pixels="image", kwargs={"speed": 0.5, "terminate": True}, fps=20)
    with pytest.raises(ConfigError, match=r"--env-set 'fps=fast': config key 'fps'"):
        parse_env_options(["fps=fast"])


def test_random_and_play_episodes():
    env = toy()
    try:
        for source in ("random", "play"):
            ep = run_episode(env, make_scripted_policy(source, env, seed=0), seed=5, source=source, max_steps=12)
            again = run_episode(env, make_scripted_policy(source, env, seed=0), seed=5, source=source, max_steps=12)
            np.testing.assert_array_equal(ep.actions, again.actions)
            np.testing.assert_array_equal(ep.frames, again.frames)
            assert ep.frames.shape == (12, 32, 24, 3) and ep.proprio.shape == (12, 2) and ep.state.shape == (12, 4)
            assert (ep.meta.source, ep.meta.outcome, ep.meta.instruction, ep.fps) == (source, "play", "", 15)
            assert ep.meta.embodiment == "gym-toyreach-v0" and np.abs(np.diff(ep.proprio, axis=0)).max() > 0
        with pytest.raises(EnvError, match="play or random"):
            make_scripted_policy("expert", env)
    finally:
        env.close()


def test_collect_from_the_command_line_and_the_api(tmp_path):
    import dataclasses

    import flexwm
    from flexwm.cli import app
    from flexwm.collect import CollectConfig
    from flexwm.config import from_dict
    from flexwm.data import FlexDataset

    argv = ["collect", "--env", TOY, "--source", "random,play", "--episodes", "2", "--max-steps", "8",
            "--image-size", "32", "--env-set", "pixels=image", "--env-set", "proprio=agent_pos",
            "--env-set", "instructions=reach the green dot", "--out", str(tmp_path / "ds")]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    ds = FlexDataset(tmp_path / "ds")
    assert (len(ds), ds.embodiment, ds.action_dim, ds.proprio_dim, ds.fps, tuple(ds.image_size)) == (
        4, "gym-toyreach-v0", 4, 2, 15, (32, 32))
    assert {e["env_task"] for e in ds.episodes} == {"ToyReach-v0"}
    assert sorted(e["source"] for e in ds.episodes) == ["play", "play", "random", "random"]
    out = flexwm.collect(tmp_path / "api", env=TOY, env_options={"pixels": "render"}, sources=["random"], episodes=1,
                         max_steps=4, image_size=16, progress=False)
    assert out["written"] == 1 and FlexDataset(tmp_path / "api").proprio_dim == 1  # a Dict observation: no proprio
    cfg = CollectConfig(env=TOY, tasks=["ToyReach-v0"], env_options=GymEnvConfig(pixels="image"))
    assert from_dict(CollectConfig, dataclasses.asdict(cfg)) == cfg  # as worker processes rebuild it
    for bad, fragment in ((["--source", "expert"], "play,random"), (["--env", "pusht"], "gym:ENV_ID")):
        r = CliRunner().invoke(app, [*argv[:-1], str(tmp_path / "bad"), *bad])
        assert r.exit_code != 0 and fragment in str(r.exception), r.output
    r = CliRunner().invoke(app, ["tasks", "--env", TOY, "--env-set", "instructions=reach the green dot"])
    assert r.exit_code == 0 and "ToyReach-v0" in r.output and "reach the green dot" in r.output
