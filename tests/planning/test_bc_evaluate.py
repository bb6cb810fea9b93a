"""The behaviour-cloning baseline and evaluation on the real simulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from flexwm.data import DatasetWriter, Episode, EpisodeMeta, FlexDataset
from flexwm.envs.base import Observation
from flexwm.envs.instructions import paraphrases
from flexwm.errors import ConfigError, DatasetError
from flexwm.evaluation.simulator import evaluate_policy
from flexwm.models.text import make_text_encoder
from flexwm.planning import BCModel, make_policy, train_bc
from tests.helpers.toy_planning import PointMass

torch.set_num_threads(1)


def episode(i: int, outcome: str = "success", T: int = 10) -> Episode:
    """Frames whose brightness encodes (episode, t); actions a smooth function of both."""
    t = np.arange(T)
    frames = np.zeros((T, 16, 16, 3), np.uint8)
    frames[..., 0] = (20 * t)[:, None, None]
    frames[..., 1] = 60 * i
    actions = np.stack([np.sin(0.5 * t + i), np.cos(0.3 * t), 0.1 * t - 0.5, np.full(T, 0.3 * i)], 1)
    return Episode(frames=frames, proprio=np.stack([t / T, np.full(T, i)], 1).astype(np.float32),
                   actions=actions.astype(np.float32), success=t >= T - 1, state=np.zeros((T, 1), np.float32),
                   meta=EpisodeMeta(embodiment="sawyer", task="door-open-v3", instruction="open the door",
                                    outcome=outcome, source="expert" if outcome == "success" else "noisy",
                                    noise=0.0, seed=i))


def test_bc_overfits_a_tiny_dataset_and_round_trips(tmp_path) -> None:
    with DatasetWriter(tmp_path / "ds", fps=10, image_size=16, action_dim=4, proprio_dim=2, state_dim=1,
                       embodiment="sawyer") as w:
        for i in range(3):
            w.add(episode(i))
        w.add(episode(3, outcome="failure"))
    ds = FlexDataset(tmp_path / "ds")
    model, info = train_bc(ds, "tiny", steps=300, batch_size=16, lr=3e-3, augment=0, paraphrase_prob=0.0)
    assert info["episodes"] == 3 and info["samples"] == 30  # the failure is left out
    first, last = np.mean(info["losses"][:10]), np.mean(info["losses"][-20:])
    assert last < 0.05 * first, (first, last)
    # predictions reproduce the demonstrated chunk
    ep = episode(1)
    text = torch.as_tensor(make_text_encoder("hash").embed(["open the door"]))
    with torch.no_grad():
        pred = model.predict(torch.as_tensor(ep.frames[2:3]), torch.as_tensor(ep.proprio[2:3]), text)[0]
    assert np.abs(pred.numpy() - ep.actions[2:6]).max() < 0.25
    model.save_pretrained(tmp_path / "bc")
    loaded = BCModel.from_pretrained(tmp_path / "bc")
    with torch.no_grad():
        again = loaded.predict(torch.as_tensor(ep.frames[2:3]), torch.as_tensor(ep.proprio[2:3]), text)[0]
    torch.testing.assert_close(pred, again)
    policy = make_policy("bc", bc_model=loaded)
    policy.reset(0)
    a = policy.act(Observation(image=ep.frames[0], proprio=ep.proprio[0], instruction="open the door"))
    assert a.shape == (4,) and policy.execute == 2  # half of the tiny preset's 4-action chunk


def test_bc_needs_successes() -> None:
    with pytest.raises(DatasetError, match="no success episodes"):
        train_bc([episode(0, outcome="failure")], "tiny", steps=1)


def test_evaluate_random_policy_on_reach() -> None:
    policy = make_policy("random", action_space=spaces.Box(-1, 1, (4,), np.float32))
    out = evaluate_policy(policy, "metaworld", "reach-v3", episodes=2, seed=5, max_steps=6, record_video=1)
    assert out["episodes"] == 2 and len(out["per_episode"]) == 2 and out["success"] == [r["success"] for r in
                                                                                        out["per_episode"]]
    assert out["summary"]["episodes"] == 2 and len(out["summary"]["ci95"]) == 2
    held_out = paraphrases("reach-v3", "eval")
    assert [r["instruction"] for r in out["per_episode"]] == held_out[:2]
    assert [r["seed"] for r in out["per_episode"]] == [5, 6]
    assert all(r["instruction_seen_in_training"] is None for r in out["per_episode"])  # no run text cache
    assert out["latency"]["decisions"] == sum(r["steps"] for r in out["per_episode"])  # execute = 1
    assert out["latency"]["mean_s"] >= 0 and out["latency"]["p95_s"] >= 0
    assert len(out["videos"]) == 1
    v = out["videos"][0]
    T = out["per_episode"][0]["steps"]
    assert v["real"].shape == (T + 1, 64, 64, 3) and v["imagined"].shape == v["real"].shape
    assert len(v["plans"]) == T and all(p["imagined"] is None for p in v["plans"])


def test_evaluate_rejects_a_policy_with_the_wrong_action_dim() -> None:
    policy = make_policy("random", PointMass())  # 2-d actions
    with pytest.raises(ConfigError, match=r"2-d actions.*metaworld/reach-v3 expects 4-d"):
        evaluate_policy(policy, "metaworld", "reach-v3", episodes=1, max_steps=2)


def test_evaluate_a_world_model_policy_returns_imagined_frames_beside_the_real_ones(wm) -> None:
    policy = make_policy("wam", wm, {"execute": 2}, action_space=spaces.Box(-1, 1, (4,), np.float32))
    out = evaluate_policy(policy, "metaworld", "reach-v3", episodes=1, seed=0, max_steps=5, record_video=1,
                          instruction_split="canonical")
    v = out["videos"][0]
    assert out["per_episode"][0]["instruction"] == "reach the goal"  # the canonical instruction
    assert [p["step"] for p in v["plans"]] == [0, 2, 4] and out["latency"]["decisions"] == 3
    assert v["plans"][0]["imagined"].shape == (2, 64, 64, 3)  # H = 4 actions -> 2 frames
    # imagined frame k of the plan made at step s shows time s + (k + 1) * frame_stride
    filled = [t for t in range(len(v["real"])) if v["imagined"][t].any()]
    assert filled == [2, 4] and v["frame_stride"] == 2
    np.testing.assert_array_equal(v["imagined"][4], v["plans"][1]["imagined"][0])  # the newest plan wins


def test_evaluation_records_whether_the_instruction_was_trained_on_and_leaves_the_cache_alone(tmp_path, wm):
    from flexwm.evaluation.simulator import instruction_seen_in_training
    from flexwm.models.interface import FlexWorldModelWrapper

    cache = tmp_path / "text_cache.safetensors"
    make_text_encoder("hash", cache_path=cache).embed(["reach the goal"])  # what "training" embedded
    run_wm = FlexWorldModelWrapper(wm.model, wm.tokenizer, make_text_encoder("hash", cache_path=cache),
                                   embodiment="sawyer", steps=2)
    assert instruction_seen_in_training(run_wm, "reach the goal") is True
    assert instruction_seen_in_training(run_wm, "zorp the blicket") is False
    assert instruction_seen_in_training(wm, "reach the goal") is None  # no cache: cannot tell
    policy = make_policy("wam", run_wm, action_space=spaces.Box(-1, 1, (4,), np.float32))
    out = evaluate_policy(policy, "metaworld", "reach-v3", episodes=2, max_steps=2, instruction_split="all")
    assert [(r["instruction"], r["instruction_seen_in_training"]) for r in out["per_episode"]] == [
        ("reach the goal", True), (paraphrases("reach-v3", "train")[1], False)]
    assert out["policy_config"]["execute"] is None and out["policy"] == "wam"
    assert len(make_text_encoder("hash", cache_path=cache)._disk) == 1  # nothing written during evaluation
    assert run_wm.text_encoder.autosave is True  # and the setting is restored
