"""RL in imagination: a deliberately slow BC policy on the toy line task, improved inside the toy's exact world
model, succeeds more often in the real toy simulator; the same algorithm runs on real rollouts; bad input
gets a clear error."""

import numpy as np
import pytest
import torch

from flexwm.errors import ConfigError
from flexwm.models.text import make_text_encoder
from flexwm.planning.bc import BCModel
from flexwm.planning.bc import preset as bc_preset
from flexwm.rl.improve import ImproveConfig, improve_bc, rollouts
from flexwm.rl.toy import LineEnv, LineWorldModel
from tests.helpers.tracking import on_a_terminal


def slow_bc(speed: float = -0.8, proprio_dim: int = 0) -> BCModel:
    """A BC policy that always outputs action[0] = speed (too slow to reach the goal in 20 steps)."""
    torch.manual_seed(0)
    bc = BCModel(bc_preset("tiny", image_size=(64, 64), proprio_dim=proprio_dim, horizon=4))
    last = bc.mlp[-1]
    with torch.no_grad():
        last.weight.mul_(0.01)
        last.bias.zero_()
        last.bias.view(4, 4)[:, 0] = speed
    return bc.eval()


def real_success(bc, seeds, text) -> float:
    cfg = ImproveConfig(noise=0.0, max_steps=20)
    env = LineEnv(max_episode_steps=20)
    starts = [env.reset(s) for s in seeds]
    out = rollouts(bc, text, starts, 1, cfg, 2, torch.Generator().manual_seed(0), env=env, seeds=seeds)
    return float(out["returns"].mean())


@pytest.fixture(scope="module")
def text():
    return torch.as_tensor(make_text_encoder("hash").embed(["reach the goal"])).float()


def test_imagination_rl_improves_real_success(text):
    bc = slow_bc()
    seeds = list(range(100, 120))
    before = real_success(bc, seeds, text)
    cfg = ImproveConfig(iterations=6, starts=4, samples=6, noise=0.5, max_steps=20, updates=40, batch_size=32,
                        lr=3e-3, seed=0)
    wm = LineWorldModel()
    improved, log = improve_bc(bc, "reach", cfg, wm=wm, env=LineEnv(max_episode_steps=20),
                               instruction="reach the goal", text_encoder=make_text_encoder("hash"))
    after = real_success(improved, seeds, text)
    assert before == 0.0 and after >= 0.8, (before, after, log["iterations"])
    assert log["backend"] == "imagination" and len(log["iterations"]) == 6
    assert log["iterations"][-1]["mean_return"] > log["iterations"][0]["mean_return"]
    # the input policy is left as it was
    assert real_success(bc, seeds, text) == 0.0


def test_no_signal_means_no_update(text):
    """Rollouts whose returns are all equal carry no advantage: the policy must not move."""
    bc = slow_bc(speed=-1.0)
    cfg = ImproveConfig(iterations=1, starts=2, samples=3, noise=0.0, max_steps=6, updates=5, seed=0)
    improved, log = improve_bc(bc, "reach", cfg, env=LineEnv(max_episode_steps=6), instruction="reach the goal",
                               text_encoder=make_text_encoder("hash"))
    assert log["backend"] == "real" and log["iterations"][0]["weighted_decisions"] == 0
    for a, b in zip(bc.state_dict().values(), improved.state_dict().values()):
        assert torch.equal(a, b)


def test_real_backend_runs_and_counts_steps(text):
    cfg = ImproveConfig(iterations=2, starts=2, samples=2, noise=0.5, max_steps=20, updates=5, seed=1)
    _, log = improve_bc(slow_bc(), "reach", cfg, env=LineEnv(max_episode_steps=20), instruction="reach the goal",
                        text_encoder=make_text_encoder("hash"))
    assert all(r["rollouts"] == 4 for r in log["iterations"])
    assert log["native_steps"] == sum(r["native_steps"] for r in log["iterations"]) > 0
    assert np.isfinite(log["wall_s"])


def test_progress_bar_and_iteration_log_leave_the_result_unchanged(monkeypatch):
    """A bar on a terminal and the per-iteration callback (TensorBoard's feed) only observe: same policy, same log."""
    cfg = ImproveConfig(iterations=2, starts=2, samples=2, noise=0.5, max_steps=8, updates=4, batch_size=8, seed=3)

    def run(**kw):
        return improve_bc(slow_bc(), "reach", cfg, wm=LineWorldModel(), env=LineEnv(max_episode_steps=8),
                          instruction="reach the goal", text_encoder=make_text_encoder("hash"), **kw)

    quiet_model, quiet = run()
    term = on_a_terminal(monkeypatch)
    rows = []
    model, log = run(progress=True, on_iteration=rows.append)
    drawn = term.getvalue()
    assert "improve reach imagined" in drawn and "2/2" in drawn and "iteration 1: mean return" in drawn
    assert rows == log["iterations"]
    strip = lambda it: [{k: v for k, v in r.items() if k != "wall_s"} for r in it]  # noqa: E731
    assert strip(log["iterations"]) == strip(quiet["iterations"])
    for a, b in zip(quiet_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_input():
    with pytest.raises(ConfigError, match="no-proprio"):
        improve_bc(slow_bc(proprio_dim=4), "reach", ImproveConfig(iterations=1), wm=LineWorldModel(),
                   env=LineEnv(), text_encoder=make_text_encoder("hash"))
    with pytest.raises(ConfigError, match="world model with 2-d"):
        improve_bc(slow_bc(), "reach", ImproveConfig(iterations=1), wm=LineWorldModel(action_dim=2), env=LineEnv(),
                   text_encoder=make_text_encoder("hash"))
    with pytest.raises(ConfigError, match="samples"):
        ImproveConfig(samples=1)


class LineFrames:
    """A stand-in dataset: episodes of LineEnv frames at positions spread over the track (no simulator)."""

    root, image_size = "line-frames", (64, 64)

    def __init__(self, n: int = 6):
        from flexwm.rl.toy import _grey

        xs = np.linspace(-0.5, 0.45, 10 * n).reshape(n, 10)
        self.frames = [np.stack([np.full((64, 64, 3), _grey(x), np.uint8) for x in row]) for row in xs]

    def load_episode(self, i: int):
        return type("Ep", (), {"frames": self.frames[i]})()


def test_short_branches_from_dataset_frames_improve_real_success(text):
    """Branches of 3 decisions from frames anywhere on the track, scored by the progress head (dense); a success
    reward would only reach frames near the goal."""
    bc = slow_bc()
    seeds = list(range(100, 120))
    cfg = ImproveConfig(iterations=6, starts=8, samples=4, noise=0.5, updates=40, batch_size=32, lr=3e-3, seed=0,
                        start="dataset", branch=3, reward="progress")
    improved, log = improve_bc(bc, "reach", cfg, wm=LineWorldModel(), instruction="reach the goal",
                               text_encoder=make_text_encoder("hash"), dataset=LineFrames(), episodes=list(range(6)))
    after = real_success(improved, seeds, text)
    assert real_success(bc, seeds, text) == 0.0 and after >= 0.8, (after, log["iterations"])
    assert all(r["rollouts"] == 32 and r["decisions"] == 32 for r in log["iterations"])  # first decisions only


def test_branches_need_a_dataset_and_progress_needs_branches(text):
    with pytest.raises(ConfigError, match="episodes="):
        improve_bc(slow_bc(), "reach", ImproveConfig(start="dataset"), wm=LineWorldModel(),
                   instruction="reach the goal", text_encoder=make_text_encoder("hash"))
    with pytest.raises(ConfigError, match="short branches"):
        improve_bc(slow_bc(), "reach", ImproveConfig(reward="progress"), wm=LineWorldModel(),
                   env=LineEnv(), instruction="reach the goal", text_encoder=make_text_encoder("hash"))


def test_anchor_holds_a_policy_near_where_it_started(text):
    """Same imagined data and updates: the anchored policy's actions move less from the starting policy's."""
    frames = torch.from_numpy(LineFrames().frames[0])
    moved = {}
    for anchor in (0.0, 10.0):
        cfg = ImproveConfig(iterations=2, starts=8, samples=4, noise=0.5, updates=40, batch_size=32, lr=3e-3, seed=0,
                            start="dataset", branch=3, reward="progress", anchor=anchor)
        bc = slow_bc()
        improved, _ = improve_bc(bc, "reach", cfg, wm=LineWorldModel(), instruction="reach the goal",
                                 text_encoder=make_text_encoder("hash"), dataset=LineFrames(), episodes=list(range(6)))
        with torch.no_grad():
            moved[anchor] = float((improved(frames, None, text.expand(len(frames), -1))
                                   - bc(frames, None, text.expand(len(frames), -1))).abs().mean())
    assert moved[10.0] < 0.5 * moved[0.0], moved
