"""The world-model training runner on a tiny synthetic dataset (no simulator)."""

import json

import numpy as np
import pytest
import torch

from flexwm.data import DatasetWriter
from flexwm.errors import ConfigError, DatasetError
from flexwm.training.run import make_batch_fn, prepare, preset, train_world_model
from tests.helpers.toy_training_data import toy_episode, write_toy_dataset
from tests.helpers.tracking import read_scalars


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("ds") / "toy", n=12)


def _cfg(root, **kw):
    return preset("tiny", data=[str(root)], tokenizer={"image_size": 32}, **kw)


def test_batches_route_outcomes_and_instructions(dataset, tmp_path):
    cfg = _cfg(dataset)
    prep, tok, _ = prepare(cfg, tmp_path, progress=False)
    assert prep.heldout == [[9]]  # every 10th episode is held out and never indexed
    assert 9 not in set(prep.index[:, 1].tolist())
    groups = make_batch_fn(prep, cfg)(torch.arange(len(prep.index)))
    (g,) = groups
    play = g["outcome"] == 2
    assert not g["has_text"][play].any() and g["has_text"][~play].all()
    assert g["context"].shape[1:] == (1, *tok.latent_shape(32))
    # a window that runs past the episode end is masked, not dropped
    assert (~g["valid"]).any() and g["valid"][:, 0].all()
    # success label: achieved by the end of the window (success episodes succeed from T/2 on)
    assert set(g["success"][g["outcome"] != 0].tolist()) == {0.0}
    assert g["success"][g["outcome"] == 0].max() == 1.0


def test_train_resume_matches_uninterrupted(dataset, tmp_path):
    full = train_world_model(_cfg(dataset), tmp_path / "a", progress=False)
    train_world_model(_cfg(dataset), tmp_path / "b", progress=False, until=10)
    train_world_model(_cfg(dataset), tmp_path / "b", progress=False, resume=True)
    la = [r["loss"] for r in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines())]
    lb = [r["loss"] for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").read_text().splitlines())]
    assert la == lb and len(la) == 6
    assert not (tmp_path / "a" / "tensorboard").exists()  # TensorBoard logging is opt-in
    from flexwm.models.world_model import FlexWorldModel

    model = FlexWorldModel.from_pretrained(full.parent.parent)  # a run directory loads its latest checkpoint
    assert "toy" in model.cfg.embodiments


def test_tensorboard_option_writes_the_logged_curves(dataset, tmp_path):
    """--tensorboard: every number of metrics.jsonl as a scalar at the same step (a run resumed after it logged
    past its last checkpoint has no step twice), and the tokenizer's curves in tokenizer/."""
    import shutil

    pytest.importorskip("tensorboard")
    cfg = _cfg(dataset, tokenizer_steps=10, train={"steps": 10, "log_every": 5, "ckpt_every": 5})
    train_world_model(cfg, tmp_path / "r", progress=False, tensorboard=True)
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step-00000010")  # as if killed after logging step 10
    train_world_model(cfg, tmp_path / "r", progress=False, resume=True, tensorboard=True)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(tmp_path / "r" / "tensorboard")
    assert {"loss", "loss_video", "loss_action", "loss_success", "lr", "grad_norm", "samples_per_s"} <= set(scalars)
    assert set(scalars) == {k for k in rows[0] if k not in ("step", "time")}
    assert [s for s, _ in scalars["loss"]] == [r["step"] for r in rows] == [5, 10]
    assert [v for _, v in scalars["loss"]] == pytest.approx([r["loss"] for r in rows])
    assert [v for _, v in scalars["lr"]] == pytest.approx([r["lr"] for r in rows])
    tok = read_scalars(tmp_path / "r" / "tensorboard" / "tokenizer")
    assert {"tokenizer/loss", "tokenizer/mse", "tokenizer/lr"} <= set(tok) and tok["tokenizer/mse"][-1][0] == 10
    # another directory
    train_world_model(cfg, tmp_path / "s", progress=False, tensorboard=tmp_path / "tb")
    assert [s for s, _ in read_scalars(tmp_path / "tb")["loss"]] == [5, 10]
    assert not (tmp_path / "s" / "tensorboard").exists()


def test_refuses_to_overwrite_and_rejects_bad_input(dataset, tmp_path):
    train_world_model(_cfg(dataset), tmp_path / "r", progress=False, until=10)
    with pytest.raises(ConfigError, match="--resume"):
        train_world_model(_cfg(dataset), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="different config"):
        train_world_model(_cfg(dataset, seed=3), tmp_path / "r", progress=False, resume=True)
    with pytest.raises(ConfigError, match="no training data"):
        train_world_model(preset("tiny"), tmp_path / "n", progress=False)
    with pytest.raises(DatasetError):
        train_world_model(preset("tiny", data=[str(tmp_path / "missing")]), tmp_path / "m", progress=False)


def test_load_run_gives_a_working_world_model(dataset, tmp_path):
    from flexwm.data import FlexDataset
    from flexwm.inference import load_run

    train_world_model(_cfg(dataset), tmp_path / "r", progress=False)
    wm = load_run(tmp_path / "r")
    ep = FlexDataset(dataset).load_episode(0)
    with torch.no_grad():
        state = wm.encode(ep.frames[None, :1], ep.proprio[None, 0])
        fut = wm.rollout(state, torch.from_numpy(ep.actions[None, :8]), generator=torch.Generator().manual_seed(0))
        frames = wm.decode(fut)
        acts, lat = wm.propose(state, "move the square", n=3, generator=torch.Generator().manual_seed(0))
    assert fut.shape[:2] == (1, 8 // wm.frame_stride) and frames.shape[-3:] == (32, 32, 3)
    assert acts.shape == (1, 3, wm.horizon, 2) and torch.isfinite(acts).all()
    with pytest.raises(ConfigError, match="knows embodiments"):
        load_run(tmp_path / "r", embodiment="sawyer")


def _write(root, outcomes, embodiment="toy", action_dim=2, proprio_dim=2):
    with DatasetWriter(root, fps=10, image_size=32, action_dim=action_dim, proprio_dim=proprio_dim, state_dim=2,
                       embodiment=embodiment) as w:
        for i, outcome in enumerate(outcomes):
            ep = toy_episode(100 + i, outcome)
            if action_dim != 2:
                ep.actions = np.concatenate([ep.actions, np.zeros((len(ep.actions), action_dim - 2), np.float32)], 1)
            if proprio_dim != 2:
                ep.proprio = np.concatenate([ep.proprio, np.zeros((len(ep.proprio), proprio_dim - 2), np.float32)], 1)
            ep.meta.embodiment = embodiment
            w.add(ep)
    return root


def test_wam_only_without_successes_is_refused(tmp_path):
    root = _write(tmp_path / "fail", ["failure", "play"] * 3)
    cfg = _cfg(root)
    cfg.model.variant = "wam-only"
    with pytest.raises(DatasetError, match="no success"):
        train_world_model(cfg, tmp_path / "r", progress=False)
    assert not list((tmp_path / "r").glob("checkpoints/step-*"))


def test_non_finite_values_in_a_batch_name_the_episode_and_step(dataset, tmp_path):
    cfg = _cfg(dataset)
    prep, _, _ = prepare(cfg, tmp_path, progress=False)
    prep.columns[0][2]["action"][5, 1] = np.nan
    rows = np.flatnonzero((prep.index[:, 1] == 2) & (prep.index[:, 2] == 3))
    with pytest.raises(DatasetError, match=r"non-finite action .* step 3 of episode 2"):
        make_batch_fn(prep, cfg)(torch.as_tensor(rows))


def test_finetune_only_adapters_of_a_new_embodiment(dataset, tmp_path):
    from flexwm.models.world_model import FlexWorldModel

    base_dir = tmp_path / "base"
    train_world_model(_cfg(dataset), base_dir, progress=False)
    base = FlexWorldModel.from_pretrained(base_dir)
    new = _write(tmp_path / "arm3", ["success", "failure", "play"] * 2, embodiment="arm3", action_dim=3)
    cfg = _cfg(new, init_from=str(base_dir), finetune="adapters")
    train_world_model(cfg, tmp_path / "ft", progress=False)
    ft = FlexWorldModel.from_pretrained(tmp_path / "ft")
    assert ft.cfg.embodiments["arm3"] == {"action_dim": 3, "proprio_dim": 2} and "toy" in ft.cfg.embodiments
    sb, sf = base.state_dict(), ft.state_dict()
    for k, v in sb.items():  # the trunk and the other embodiment are untouched
        assert torch.equal(v, sf[k]), k
    fresh = FlexWorldModel(ft.cfg).adapters["arm3"].state_dict()
    assert any(not torch.equal(v, sf[f"adapters.arm3.{k}"]) for k, v in fresh.items() if "action" in k)
    # the run remembers the tokenizer it used, so it loads for evaluation
    saved = json.loads((tmp_path / "ft" / "run_config.json").read_text())
    assert saved["tokenizer_path"] == str(base_dir / "tokenizer")


def test_init_from_with_other_action_space_is_refused(dataset, tmp_path):
    base_dir = tmp_path / "base"
    train_world_model(_cfg(dataset), base_dir, progress=False, until=10)
    wrong = _write(tmp_path / "toy3", ["success", "play"], embodiment="toy", action_dim=3)
    with pytest.raises(DatasetError, match=r"embodiment 'toy' has .*'action_dim': 3.* checkpoint .*'action_dim': 2"):
        train_world_model(_cfg(wrong, init_from=str(base_dir)), tmp_path / "ft", progress=False)
    wrong = _write(tmp_path / "toy-p4", ["success", "play"], embodiment="toy", proprio_dim=4)  # proprio too
    with pytest.raises(DatasetError, match=r"embodiment 'toy' has .*'proprio_dim': 4.* checkpoint .*'proprio_dim': 2"):
        train_world_model(_cfg(wrong, init_from=str(base_dir)), tmp_path / "ft-p", progress=False)
    with pytest.raises(ConfigError, match="needs init_from"):
        train_world_model(_cfg(dataset, finetune="adapters"), tmp_path / "x", progress=False)


def test_train_episodes_filter_keeps_chosen_training_episodes(dataset, tmp_path):
    # toy outcomes cycle success, failure, play; episode 9 is held out
    cfg = _cfg(dataset, train_episodes={"outcomes": ["success", "play"], "per_task": 3})
    prep, _, _ = prepare(cfg, tmp_path, progress=False)
    assert sorted(set(prep.index[:, 1].tolist())) == [0, 2, 3]  # first 3 successes or play, in episode order
    assert prep.heldout == [[9]]  # the held-out episodes do not move
    with pytest.raises(DatasetError, match="keeps no training episode"):
        prepare(_cfg(dataset, train_episodes={"sources": ["no-such-source"]}), tmp_path / "none", progress=False)
    with pytest.raises(ConfigError, match="unknown outcome"):
        _cfg(dataset, train_episodes={"outcomes": ["sucess"]})


def test_action_and_state_keys_choose_the_features_of_a_hub_dataset(tmp_path):
    from flexwm.training.run import run_config
    from tests.helpers.lerobot_synth import TOP, actions, state, write_lerobot_dataset

    keys = {"action_key": "action.joint_positions", "state_key": "observation.joint_positions"}
    root = write_lerobot_dataset(tmp_path / "joints", cameras=(TOP,), **keys)
    with pytest.raises(DatasetError, match="--action-key"):
        prepare(run_config("tiny", data=[str(root)], resize=32, overrides=["tokenizer.image_size=32"]),
                tmp_path / "r0", progress=False)
    cfg = run_config("tiny", data=[str(root)], resize=32, overrides=["tokenizer.image_size=32"], **keys)
    assert (cfg.action_key, cfg.state_key) == (keys["action_key"], keys["state_key"])
    prep, _, _ = prepare(cfg, tmp_path / "r", progress=False)
    (ds,) = prep.datasets
    assert (ds.layout.action_key, ds.layout.state_key) == (keys["action_key"], keys["state_key"])
    cols = ds.load_columns(2)
    np.testing.assert_array_equal(cols["action"], actions(2))
    np.testing.assert_array_equal(cols["observation.state"], state(2))
