"""The receding-horizon wrapper, the frame history and config checks."""

from __future__ import annotations

import numpy as np
import pytest

from flexwm.envs.base import Observation
from flexwm.errors import ConfigError
from flexwm.planning import POLICIES, FrameHistory, Plan, Planner, RecedingHorizonPolicy, policy_config


def obs(t: int, instruction: str = "open the door") -> Observation:
    """A frame whose pixels all equal t (so the history can be read back)."""
    return Observation(image=np.full((4, 4, 3), t, np.uint8), proprio=np.array([t], np.float32),
                       instruction=instruction)


class Recorder(Planner):
    """Plans actions [[call, 0], [call, 1], ...] and records what it was given."""

    name = "recorder"

    def __init__(self, horizon: int = 6, context_frames: int = 3, frame_stride: int = 2):
        self.horizon, self.action_dim = horizon, 2
        self.context_frames, self.frame_stride = context_frames, frame_stride
        self.calls: list[dict] = []

    def _plan(self, frames, proprio, instruction, generator, executed):
        self.calls.append({"frames": frames[:, 0, 0, 0].tolist(), "proprio": proprio.tolist(),
                           "instruction": instruction, "executed": executed})
        k = len(self.calls) - 1
        return Plan(actions=np.stack([[k / 10, i / 10] for i in range(self.horizon)]).astype(np.float32))


def test_executes_k_actions_then_replans() -> None:
    planner = Recorder(horizon=6)
    policy = RecedingHorizonPolicy(planner, execute=4)
    policy.reset(0)
    actions, replans = [], []
    for t in range(10):
        actions.append(policy.act(obs(t)))
        replans.append(policy.replanned)
    assert replans == [True, False, False, False] * 2 + [True, False]
    assert len(planner.calls) == 3
    np.testing.assert_allclose(actions[:4], [[0, 0], [0, 0.1], [0, 0.2], [0, 0.3]])
    np.testing.assert_allclose(actions[4:6], [[0.1, 0], [0.1, 0.1]])
    assert [c["executed"] for c in planner.calls] == [0, 4, 4]
    assert planner.calls[1]["proprio"] == [4.0]
    assert policy.last_plan.seconds >= 0 and policy.last_plan.instruction == "open the door"


def test_temporal_ensembling_averages_the_plans_covering_each_step() -> None:
    """Plan k predicts (k/10, i/10) for its i-th action; at step t the plans k <= t with t - k < H cover t, and
    each predicts (k/10, (t-k)/10) for it. Weights exp(-m * j), j = 0 for the oldest covering plan."""
    planner, m = Recorder(horizon=3), 0.5
    policy = RecedingHorizonPolicy(planner, ensemble=m)
    policy.reset(0)
    for t in range(6):
        action = policy.act(obs(t))
        assert policy.replanned and len(planner.calls) == t + 1
        ks = np.arange(max(0, t - 2), t + 1)
        w = np.exp(-m * np.arange(len(ks)))
        want = (w[:, None] * np.stack([ks / 10, (t - ks) / 10], 1)).sum(0) / w.sum()
        np.testing.assert_allclose(action, want, rtol=1e-6)
    policy.reset(1)  # a new episode forgets the old plans
    np.testing.assert_allclose(policy.act(obs(0)), [0.6, 0.0], rtol=1e-6)
    with pytest.raises(ConfigError, match="execute must be 1"):
        RecedingHorizonPolicy(Recorder(), execute=2, ensemble=0.1)
    with pytest.raises(ConfigError, match=">= 0"):
        RecedingHorizonPolicy(Recorder(), ensemble=-1)


def test_history_gives_context_frames_stride_apart_with_the_first_frame_before_the_start() -> None:
    planner = Recorder(horizon=1, context_frames=3, frame_stride=2)
    policy = RecedingHorizonPolicy(planner, execute=1)
    policy.reset(0)
    for t in range(6):
        policy.act(obs(t))
    got = [c["frames"] for c in planner.calls]
    assert got == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 3], [0, 2, 4], [1, 3, 5]]
    policy.reset(1)  # a new episode starts a new history
    policy.act(obs(9))
    assert planner.calls[-1]["frames"] == [9, 9, 9]


def test_plan_does_not_change_the_history_or_the_queue() -> None:
    planner = Recorder(horizon=4)
    policy = RecedingHorizonPolicy(planner, execute=2)
    policy.reset(0)
    policy.act(obs(0))
    plan = policy.plan(obs(7, instruction="something new"))
    assert planner.calls[-1]["frames"] == [0, 0, 7] and plan.instruction == "something new"
    np.testing.assert_allclose(policy.act(obs(1)), [0, 0.1])  # still executing the first plan
    h = policy.history.frames()
    assert h[:, 0, 0, 0].tolist() == [0, 0, 1]


def test_actions_are_clipped_to_the_bounds_and_checked() -> None:
    planner = Recorder(horizon=3)
    policy = RecedingHorizonPolicy(planner, execute=3, action_low=[-1, 0.15], action_high=[0.05, 1])
    policy.reset(0)
    a = [policy.act(obs(t)) for t in range(6)]
    assert a[0].tolist() == pytest.approx([0.0, 0.15]) and a[3].tolist() == pytest.approx([0.05, 0.15])
    with pytest.raises(ConfigError, match="between 1 and the plan length 3"):
        RecedingHorizonPolicy(planner, execute=4)
    with pytest.raises(ConfigError, match="3 entries"):
        RecedingHorizonPolicy(planner, action_low=[0, 0, 0])


def test_mppi_and_cem_updates_follow_the_better_elites() -> None:
    import torch

    from flexwm.planning.sampling import cem_update, mppi_update

    elites = torch.tensor([[[0.0]], [[1.0]], [[2.0]]])  # three 1-step, 1-d sequences
    values = torch.tensor([2.0, 1.0, 0.0])  # the first is best
    zero, big = torch.zeros(1), torch.full((1,), 10.0)
    mean, std = mppi_update(elites, values, torch.zeros(1, 1), torch.ones(1, 1), temperature=0.1, min_std=zero,
                            max_std=big)
    assert float(mean) < 0.05 and float(std) < 0.3  # nearly all weight on the best
    mean, _ = mppi_update(elites, values, torch.zeros(1, 1), torch.ones(1, 1), temperature=100.0, min_std=zero,
                          max_std=big)
    assert float(mean) == pytest.approx(1.0, abs=0.01)  # high temperature: uniform over elites
    mean, std = cem_update(elites, values, torch.full((1, 1), 4.0), torch.zeros(1, 1), momentum=0.5,
                           min_std=torch.full((1,), 0.9))
    assert float(mean) == pytest.approx(0.5 * 4.0 + 0.5 * 1.0) and float(std) == pytest.approx(0.9)  # floored


def test_frame_history_rejects_bad_images() -> None:
    h = FrameHistory(2, 2)
    with pytest.raises(ConfigError, match="uint8"):
        h.push(Observation(image=np.zeros((4, 4, 3), np.float32), proprio=np.zeros(1), instruction=""))
    h.push(obs(0))
    with pytest.raises(ConfigError, match="changed shape"):
        h.push(Observation(image=np.zeros((8, 8, 3), np.uint8), proprio=np.zeros(1), instruction=""))


def test_configs_are_strict() -> None:
    for name in POLICIES:
        assert policy_config(name) is not None
        assert policy_config(name, budget="tiny") is not None
    with pytest.raises(ConfigError, match="Did you mean 'population'"):
        policy_config("cem", {"populaton": 3})
    with pytest.raises(ConfigError, match="elites"):
        policy_config("mppi", {"population": 4, "elites": 8})
    with pytest.raises(ConfigError, match="top_k"):
        policy_config("hybrid", {"proposals": 2, "top_k": 3})
    with pytest.raises(ConfigError, match="choose one of"):
        policy_config("hybrid", {"refine": "sgd"})
    with pytest.raises(ConfigError, match="unknown policy"):
        policy_config("dreamer")
    assert policy_config("cem", {"objective": {"kind": "goal"}}).objective.kind == "goal"


def test_success_objective_scores_each_window_from_the_latents_before_it() -> None:
    import torch

    from flexwm.models.interface import LatentState
    from flexwm.planning.objectives import SuccessObjective

    class Recording:
        horizon, frame_stride = 4, 2  # F = 2 frames per window
        calls: list = []

        def score(self, state, future, instruction):
            self.calls.append((state.context[0, :, 0, 0, 0].tolist(), future[0, :, 0, 0, 0].tolist(),
                               state.proprio is not None, instruction))
            return future[:, -1, 0, 0, 0], torch.zeros(future.shape[0])

    wm = Recording()
    state = LatentState(context=torch.tensor([-2.0, -1.0]).reshape(1, 2, 1, 1, 1), proprio=torch.zeros(1, 3),
                        embodiment="x")
    future = torch.arange(6.0).reshape(1, 6, 1, 1, 1)  # three windows of 2 frames
    value = SuccessObjective(wm, progress_weight=0.0, frames="all")(state, future, "go")
    assert wm.calls == [([-2.0, -1.0], [0.0, 1.0], True, "go"), ([0.0, 1.0], [2.0, 3.0], False, "go"),
                        ([2.0, 3.0], [4.0, 5.0], False, "go")]
    assert float(value) == pytest.approx((1 + 3 + 5) / 3)
    wm.calls.clear()
    assert float(SuccessObjective(wm, frames="final")(state, future, "")) == pytest.approx(5.0)
    assert wm.calls == [([2.0, 3.0], [4.0, 5.0], False, None)]
    with pytest.raises(ConfigError, match="multiple of the model's horizon"):
        SuccessObjective(wm)(state, future[:, :5], "go")
