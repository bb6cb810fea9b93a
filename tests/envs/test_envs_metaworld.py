"""Meta-World adapter on the real simulator: observations, seeding, image orientation, experts, errors."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("metaworld")

from flexwm.envs import make_env, make_scripted_policy, run_episode  # noqa: E402
from flexwm.envs.metaworld import MetaWorldEnv  # noqa: E402
from flexwm.errors import EnvError  # noqa: E402


@pytest.fixture(scope="module")
def reach():
    env = make_env("metaworld", "reach-v3", image_size=(64, 64), max_episode_steps=50)
    yield env
    env.close()


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_observation_shapes_and_dtypes(size):
    env = make_env("metaworld", "door-open-v3", image_size=size, max_episode_steps=3)
    try:
        obs = env.reset(0)
        assert obs.image.shape == (*size, 3) and obs.image.dtype == np.uint8
        assert obs.proprio.shape == (4,) and obs.proprio.dtype == np.float32
        assert obs.instruction == "open the door"
        state = env.privileged_state()
        assert state.shape == (39,) and state.dtype == np.float32
        np.testing.assert_array_equal(obs.proprio, state[:4])
        assert obs.image.std() > 10  # a real picture, not a blank buffer
        r = env.step(np.zeros(4))
        assert r.observation.image.shape == (*size, 3) and not r.done and isinstance(r.success, bool)
        env.step(np.zeros(4))
        assert env.step(np.zeros(4)).done  # max_episode_steps = 3
        with pytest.raises(EnvError, match="episode is over"):
            env.step(np.zeros(4))
    finally:
        env.close()


def test_same_seed_same_scene_different_seed_different_scene(reach):
    first = reach.reset(3)
    s3 = reach.privileged_state()
    for _ in range(10):  # some history in between must not matter
        reach.step(np.ones(4))
    other = reach.reset(4)
    s4 = reach.privileged_state()
    again = reach.reset(3)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(s3, reach.privileged_state())
    assert np.linalg.norm(s3[-3:] - s4[-3:]) > 0.01  # the goal moved
    assert not np.array_equal(first.image, other.image)
    # object placement varies across seeds too (the puck of push-v3)
    env = make_env("metaworld", "push-v3", max_episode_steps=5)
    try:
        pucks = []
        for seed in range(3):
            env.reset(seed)
            pucks.append(env.privileged_state()[4:7])
        assert min(np.linalg.norm(pucks[i] - pucks[j]) for i in range(3) for j in range(i)) > 1e-3
    finally:
        env.close()


def test_first_observation_shows_the_new_placement():
    # Meta-World's reset observation can lag the placement it just made; the adapter recomputes it
    env = make_env("metaworld", "drawer-open-v3", max_episode_steps=5)
    try:
        env.reset(0)
        before = env.privileged_state()[4:7]
        env.step(np.zeros(4))
        assert np.linalg.norm(env.privileged_state()[4:7] - before) < 5e-3
    finally:
        env.close()


def _project(env: MetaWorldEnv, point: np.ndarray) -> np.ndarray:
    """(row, col) of a world point in the true pinhole view of the env's camera (no flips or rotations)."""
    import mujoco

    m, d = env.sim.model, env.sim.data
    cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, env.camera)
    R = d.cam_xmat[cid].reshape(3, 3)
    pc = R.T @ (point - d.cam_xpos[cid])
    h, w = env.image_size
    f = (h / 2) / math.tan(math.radians(m.cam_fovy[cid]) / 2)
    return np.array([h / 2 - f * pc[1] / -pc[2], w / 2 + f * pc[0] / -pc[2]])


def _gripper_pixels(env: MetaWorldEnv) -> np.ndarray:
    """(row, col) centroid of the gripper in the rendered image, found by segmentation."""
    m = env.sim.model
    hand = m.body("hand").id

    def under_hand(b):
        while b > 0:
            if b == hand:
                return True
            b = m.body_parentid[b]
        return False

    geoms = [g for g in range(m.ngeom) if under_hand(m.geom_bodyid[g])]
    rows, cols = np.nonzero(np.isin(env.render_segmentation(), geoms))
    assert len(rows) > 5, "gripper not visible"
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.parametrize("camera", ["corner2", "corner"])
def test_images_are_upright_and_not_mirrored(camera):
    env = make_env("metaworld", "reach-v3", image_size=(128, 128), camera=camera, max_episode_steps=100)
    try:
        env.reset(0)
        hand = lambda: env.sim.data.body("hand").xpos.copy()  # noqa: E731
        c0, p0 = _gripper_pixels(env), hand()
        for _ in range(12):  # hand +x
            env.step(np.array([1.0, 0, 0, -1]))
        c1, p1 = _gripper_pixels(env), hand()
        for _ in range(10):  # hand up
            env.step(np.array([0, 0, 1.0, -1]))
        c2, p2 = _gripper_pixels(env), hand()
        assert p2[2] - p1[2] > 0.05
        # upright: the hand going up goes up in the image (rows count downwards)
        assert c2[0] - c1[0] < -3
        # not mirrored: the image is the pinhole view up to a rotation, so the orientation (sign of the 2-d cross
        # product) of two image motions matches that of their true projections; a flip would reverse it
        d1, d2 = c1 - c0, c2 - c1
        e1, e2 = _project(env, p1) - _project(env, p0), _project(env, p2) - _project(env, p1)
        cross_seen, cross_true = d1[0] * d2[1] - d1[1] * d2[0], e1[0] * e2[1] - e1[1] * e2[0]
        assert abs(cross_true) > 1 and np.sign(cross_seen) == np.sign(cross_true)
    finally:
        env.close()


@pytest.mark.parametrize("task", ["reach-v3", "button-press-v3", "door-open-v3"])
def test_scripted_expert_succeeds(task):
    env = MetaWorldEnv(task, max_episode_steps=150, terminate_on_success=True)
    try:
        for seed in (0, 1):
            ep = run_episode(env, make_scripted_policy("expert", env), seed=seed)
            assert ep.meta.outcome == "success", (task, seed)
            assert ep.success[-1] and ep.length < 150  # terminate_on_success ends the episode there
            assert ep.meta.instruction == env.instruction and ep.meta.source == "expert"
    finally:
        env.close()


def test_noisy_expert_failures_are_recorded_and_deterministic():
    env = make_env("metaworld", "door-open-v3", max_episode_steps=60)
    try:
        runs = [run_episode(env, make_scripted_policy("noisy", env, noise=1.5, seed=0), seed=5, source="noisy",
                            noise=1.5)
                for _ in range(2)]
        ep = runs[0]
        assert ep.meta.outcome == "failure" and ep.length == 60 and not ep.success.any()
        assert ep.meta.noise == 1.5 and ep.meta.source == "noisy" and ep.meta.instruction == "open the door"
        np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
        np.testing.assert_array_equal(runs[0].frames, runs[1].frames)
        assert np.all(np.abs(ep.actions) <= 1.0)  # recorded as executed: clipped to the action space
    finally:
        env.close()


def test_episode_rows_follow_the_convention(reach):
    policy = make_scripted_policy("expert", reach)
    ep = run_episode(reach, policy, seed=2, max_steps=5)
    assert ep.length == 5 and ep.frames.shape == (5, 64, 64, 3) and ep.state.shape == (5, 39)
    first = reach.reset(2)
    np.testing.assert_array_equal(ep.frames[0], first.image)  # row 0 = observation at reset
    np.testing.assert_array_equal(ep.state[0], reach.privileged_state())
    r = reach.step(ep.actions[0])
    np.testing.assert_array_equal(ep.frames[1], r.observation.image)  # row 1 = observation after action 0
    assert ep.success[0] == r.success and ep.fps == reach.fps == 80


def test_play_moves_objects():
    moved = []
    for task in ("push-v3", "pick-place-v3"):
        env = make_env("metaworld", task, max_episode_steps=100)
        try:
            env.reset(0)
            still = env.privileged_state()[4:7]
            for _ in range(20):
                env.step(np.zeros(4))
            assert np.linalg.norm(env.privileged_state()[4:7] - still) < 5e-3  # objects rest on their own
            for seed in range(3):
                ep = run_episode(env, make_scripted_policy("play", env, seed=seed), seed=seed, source="play")
                assert ep.meta.outcome == "play" and ep.meta.instruction == ""
                moved.append(np.linalg.norm(ep.state[:, 4:7] - ep.state[0, 4:7], axis=1).max())
        finally:
            env.close()
    assert sum(m > 0.02 for m in moved) >= len(moved) // 2, moved


def test_long_episodes_pass_metaworlds_own_horizon():
    env = MetaWorldEnv("reach-v3", image_size=(8, 8), max_episode_steps=502)
    try:
        env.reset(0)
        for _ in range(501):
            assert not env.step(np.zeros(4)).done
        assert env.step(np.zeros(4)).done
    finally:
        env.close()


def test_bad_actions_tasks_and_cameras_are_clear_errors(reach):
    reach.reset(0)
    with pytest.raises(EnvError, match=r"expects an action of shape \(4,\), got \(3,\)"):
        reach.step(np.zeros(3))
    reach.step(np.zeros(4))
    with pytest.raises(EnvError, match=r"reach-v3 at step 1 of the episode got a non-finite"):
        reach.step(np.array([0.0, np.nan, 0.0, 0.0]))
    # out of range: clipped by default, rejected on request (naming the bounds)
    assert reach.check_action(np.array([3.0, -3.0, 0.5, 0.0])).tolist() == [1.0, -1.0, 0.5, 0.0]
    strict = make_env("metaworld", "reach-v3", image_size=(8, 8), out_of_range="reject")
    strict.reset(0)
    with pytest.raises(EnvError, match=r"step 0 .* outside the action space"):
        strict.step(np.array([3.0, 0.0, 0.0, 0.0]))
    strict.step(np.array([1.0, 0.0, 0.0, -1.0]))
    strict.close()
    with pytest.raises(EnvError, match="out_of_range"):
        make_env("metaworld", "reach-v3", out_of_range="wrap")
    with pytest.raises(EnvError,
                       match=r"(?i)unknown Meta-World task 'door-opn-v3'.*did you mean 'door-open-v3'.*reach-v3"):
        make_env("metaworld", "door-opn-v3")
    with pytest.raises(EnvError, match=r"corner5.*corner2"):
        make_env("metaworld", "reach-v3", camera="corner5")
    with pytest.raises(EnvError, match="simulator"):
        make_env("mujoco", "reach-v3")
    fresh = MetaWorldEnv("reach-v3", image_size=(8, 8))
    with pytest.raises(EnvError, match="reset"):
        fresh.step(np.zeros(4))
    fresh.close()


def test_default_and_fast_rendering_show_the_same_scene():
    fast = make_env("metaworld", "door-open-v3", fast_render=True)
    slow = make_env("metaworld", "door-open-v3", fast_render=False)
    try:
        a, b = fast.reset(1).image.astype(float), slow.reset(1).image.astype(float)
        assert np.abs(a - b).mean() < 20  # no shadows / anti-aliasing, but the same picture
        assert not np.array_equal(a, b)
    finally:
        fast.close()
        slow.close()


def test_interpreter_exits_without_egl_tracebacks():
    code = ("from flexwm.envs import make_env\n"
            "a = make_env('metaworld', 'reach-v3'); a.reset(0)\n"
            "b = make_env('metaworld', 'door-open-v3'); b.reset(0)\n")  # never closed
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
