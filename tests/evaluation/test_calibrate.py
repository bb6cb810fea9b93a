"""Imagined-success calibration on the toy line world, whose model is exact except for a biased success head."""

import dataclasses

import numpy as np
import pytest

from flexwm.data.episode import Episode, EpisodeMeta
from flexwm.errors import ConfigError
from flexwm.evaluation.calibrate import auc, best_threshold, calibrate_imagined_success, replay_steps
from flexwm.rl.toy import LineEnv, LineWorldModel
from tests.helpers.tracking import on_a_terminal


def episode(speed: float, seed: int) -> Episode:
    env = LineEnv(max_episode_steps=20)
    obs = env.reset(seed)
    frames, actions, success = [], [], []
    for _ in range(20):
        a = np.zeros(4, np.float32)
        a[0] = speed
        frames.append(obs.image)
        res = env.step(a)
        actions.append(a)
        success.append(res.success)
        obs = res.observation
    T = len(actions)
    return Episode(frames=np.stack(frames), proprio=np.zeros((T, 4), np.float32), actions=np.stack(actions),
                   success=np.array(success), state=np.zeros((T, 2), np.float32),
                   meta=EpisodeMeta(embodiment="line", task="reach", instruction="reach the goal",
                                    outcome="success" if any(success) else "failure", source="noisy", noise=0.0,
                                    seed=seed))


def test_calibration_finds_the_cut_an_optimistic_head_needs() -> None:
    eps = [episode(speed, seed) for seed, speed in enumerate(np.linspace(-1.0, 1.0, 24))]
    labels = [bool(e.success.any()) for e in eps]
    assert 4 <= sum(labels) <= 20  # both outcomes present
    # the head believes the goal is at 0.3 instead of 0.5: rollouts that stop between 0.3 and 0.5 look successful
    wm = LineWorldModel(goal=0.3, sharpness=20.0)
    cal = calibrate_imagined_success(wm, eps)
    assert cal["auc"] == pytest.approx(1.0)  # imagination ranks every success above every failure
    assert cal["balanced_accuracy"] == pytest.approx(1.0) and cal["balanced_accuracy_at_0.5"] < 1.0
    assert cal["threshold"] > 0.5 and cal["n_success"] == sum(labels)
    # an exact head needs no correction: 0.5 already separates
    exact = calibrate_imagined_success(LineWorldModel(goal=0.5, sharpness=20.0), eps)
    assert exact["balanced_accuracy_at_0.5"] == pytest.approx(1.0)


def test_threshold_and_auc_helpers() -> None:
    assert auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auc([0.1, 0.9], [True, False]) == 0.0
    t, acc = best_threshold([0.9, 0.8, 0.7, 0.2], [True, True, False, False])
    assert 0.7 < t < 0.8 and acc == 1.0
    with pytest.raises(ConfigError, match="both successes and failures"):
        best_threshold([0.2, 0.3], [True, True])


def test_progress_bar_counts_the_imagined_steps_and_changes_nothing(monkeypatch) -> None:
    eps = [episode(speed, seed) for seed, speed in enumerate(np.linspace(-1.0, 1.0, 6))]
    wm = LineWorldModel(goal=0.3, sharpness=20.0)
    quiet = calibrate_imagined_success(wm, eps, batch=4)
    term = on_a_terminal(monkeypatch)
    shown = calibrate_imagined_success(wm, eps, batch=4, progress=True)
    steps = replay_steps(wm, eps, batch=4)
    assert steps == 2 * (20 // int(wm.frame_stride)) and f"{steps}/{steps}" in term.getvalue()
    assert quiet == shown


def test_episodes_of_another_action_space_are_a_clear_error() -> None:
    eps = [episode(0.5, 0)]
    eps[0] = dataclasses.replace(eps[0], actions=eps[0].actions[:, :3])
    with pytest.raises(ConfigError, match=r"episodes have 3-d actions but the world model expects 4-d"):
        calibrate_imagined_success(LineWorldModel(), eps)
