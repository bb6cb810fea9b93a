"""Data-collection policies without a simulator: noise statistics, determinism, error messages."""

import numpy as np
import pytest
from gymnasium import spaces

from flexwm.envs.base import Observation, ScriptedPolicy
from flexwm.envs.policies import NoisyPolicy, PlayPolicy
from flexwm.errors import EnvError

OBS = Observation(image=np.zeros((8, 8, 3), np.uint8), proprio=np.zeros(4, np.float32), instruction="")


class Constant(ScriptedPolicy):
    def __init__(self, value):
        self.value = np.asarray(value, np.float32)
        self.resets = []

    def reset(self, seed):
        self.resets.append(seed)

    def act(self, obs, state):
        return self.value


def _actions(policy, n, seed=0, state=None):
    policy.reset(seed)
    state = np.zeros(39, np.float32) if state is None else state
    return np.stack([policy.act(OBS, state) for _ in range(n)])


def test_noise_has_the_requested_std_and_is_clipped():
    box = spaces.Box(np.array([-1, -1, 0, 0], np.float32), np.array([1, 1, 512, 512], np.float32))
    base = Constant([0, 0, 256, 256])
    a = _actions(NoisyPolicy(base, noise=0.1, action_space=box, seed=3), 4000)
    np.testing.assert_allclose(a.std(axis=0), [0.1, 0.1, 25.6, 25.6], rtol=0.08)
    assert np.all(np.abs(a.mean(axis=0) - [0, 0, 256, 256]) < [0.01, 0.01, 2.5, 2.5])  # zero-mean noise
    assert base.resets == [0, 0]  # the base policy is reset (at construction, then with the episode seed)
    big = _actions(NoisyPolicy(base, noise=2.0, action_space=box, seed=3), 500)
    assert np.all(big >= box.low) and np.all(big <= box.high) and np.any(big == box.high)


def test_noise_is_deterministic_per_seed_and_optionally_correlated():
    box = spaces.Box(-np.ones(2, np.float32), np.ones(2, np.float32))
    p = NoisyPolicy(Constant([0, 0]), noise=0.2, action_space=box, seed=1)
    np.testing.assert_array_equal(_actions(p, 50, seed=4), _actions(p, 50, seed=4))
    assert not np.array_equal(_actions(p, 50, seed=4), _actions(p, 50, seed=5))
    other = NoisyPolicy(Constant([0, 0]), noise=0.2, action_space=box, seed=2)
    assert not np.array_equal(_actions(p, 50, seed=4), _actions(other, 50, seed=4))
    white = _actions(p, 3000)[:, 0]
    red = _actions(NoisyPolicy(Constant([0, 0]), 0.2, box, seed=1, correlation=0.9), 3000)[:, 0]
    lag1 = lambda x: np.corrcoef(x[:-1], x[1:])[0, 1]  # noqa: E731
    assert abs(lag1(white)) < 0.1 and lag1(red) > 0.8
    assert red.std() == pytest.approx(0.2, rel=0.25)
    with pytest.raises(EnvError, match="noise"):
        NoisyPolicy(Constant([0, 0]), noise=-0.1, action_space=box)


def test_play_is_deterministic_smooth_and_goes_to_objects():
    box = spaces.Box(-np.ones(4, np.float32), np.ones(4, np.float32))
    state = np.zeros(39, np.float32)
    state[:3] = [0.0, 0.6, 0.2]  # hand
    state[4:7] = [0.1, 0.7, 0.02]  # an object
    play = PlayPolicy("sawyer", box, seed=0)
    a = _actions(play, 30, seed=1, state=state)
    np.testing.assert_array_equal(a, _actions(play, 30, seed=1, state=state))
    assert not np.array_equal(a, _actions(play, 30, seed=2, state=state))
    assert np.all(np.abs(a) <= 1)
    assert np.abs(np.diff(a[:, :3], axis=0)).max() < 0.6  # low-pass filtered motion, no bang-bang
    # over many plans, most first moves head for the object (it is at +x, +y, below the hand)
    toward = [(_actions(PlayPolicy("sawyer", box, seed=s), 1, state=state)[0, :3] @ (state[4:7] - state[:3])) > 0
              for s in range(40)]
    assert np.mean(toward) > 0.6
    with pytest.raises(EnvError, match="embodiment"):
        PlayPolicy("aloha", box)


def test_make_scripted_policy_and_expert_errors():
    from flexwm.envs import make_scripted_policy
    from flexwm.envs.policies import MetaWorldExpert

    pytest.importorskip("metaworld")
    with pytest.raises(EnvError, match=r"(?i)did you mean 'reach-v3'"):
        MetaWorldExpert("reach-v2")

    class Fake:
        embodiment, task = "sawyer", "reach-v3"
        action_space = spaces.Box(-np.ones(4, np.float32), np.ones(4, np.float32))

    with pytest.raises(EnvError, match="expert.*noisy.*play.*random"):
        make_scripted_policy("randm", Fake())  # type: ignore[arg-type]
    assert isinstance(make_scripted_policy("noisy", Fake(), noise=0.3), NoisyPolicy)


def test_babbling_and_random_cover_the_action_space_deterministically():
    from flexwm.envs.policies import BabblingPolicy, RandomPolicy

    box = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    for make in (lambda s: BabblingPolicy(box, seed=s), lambda s: RandomPolicy(box, seed=s)):
        a = _actions(make(0), 400, seed=1)
        np.testing.assert_array_equal(a, _actions(make(0), 400, seed=1))
        assert not np.array_equal(a, _actions(make(0), 400, seed=2))
        assert not np.array_equal(a, _actions(make(1), 400, seed=1))
        assert np.all(a >= box.low) and np.all(a <= box.high) and a.dtype == np.float32
        assert np.all(a.min(0) < box.low + 0.25 * (box.high - box.low))  # reaches both ends of every dimension
        assert np.all(a.max(0) > box.high - 0.25 * (box.high - box.low))
    smooth = np.abs(np.diff(_actions(BabblingPolicy(box, seed=0), 400), axis=0)).max(0)
    jumpy = np.abs(np.diff(_actions(RandomPolicy(box, seed=0), 400), axis=0)).max(0)
    assert np.all(smooth < 0.4 * jumpy)  # babbling glides; random jumps
    with pytest.raises(EnvError, match="smoothing"):
        BabblingPolicy(box, smoothing=1.0)
