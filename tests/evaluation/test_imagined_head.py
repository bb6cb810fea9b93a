"""Re-fitting the success head on imagined futures (flexwm tune-head) on a tiny trained run."""

import numpy as np
import pytest
import torch

from flexwm.errors import ConfigError
from flexwm.evaluation import imagined_head
from flexwm.evaluation.imagined_head import fit_success_head, imagined_head_features, tune_success_head
from flexwm.training.run import preset, train_world_model
from tests.helpers.toy_training_data import write_toy_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("th")
    data = write_toy_dataset(root / "toy", n=30)
    cfg = preset("tiny", data=[str(data)], tokenizer={"image_size": 32})
    train_world_model(cfg, root / "run", progress=False)
    return root / "run", data


def _episodes(data):
    from flexwm.data import FlexDataset

    ds = FlexDataset(data)
    return [ds.load_episode(i) for i in range(len(ds)) if i % 10 != 9]


def test_features_are_what_the_head_sees_and_labels_follow_real_success(run):
    from flexwm.inference import load_run

    path, data = run
    eps = _episodes(data)[:6]
    wm = load_run(path, steps=2)
    d = imagined_head_features(wm, eps, batch=4)
    head = wm.model.head
    logit = d["features"] @ head.weight[0].double().numpy() + float(head.bias[0])
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), d["old_prob"], atol=1e-5)
    stride = wm.frame_stride
    for e_i, e in enumerate(eps):  # success episodes succeed from T/2 on: labels switch on there, never before
        rows = d["episode"] == e_i
        want = [bool(e.success[: (k + 1) * stride].any()) for k in d["step"][rows]]
        assert d["labels"][rows].tolist() == want
    assert d["labels"].any() and not d["labels"].all()


def test_tuned_checkpoint_changes_only_the_success_row_and_reuses_its_features(run, tmp_path, monkeypatch):
    from flexwm.inference import load_run

    path, data = run
    eps = _episodes(data)
    rep = tune_success_head(path, tmp_path / "ih", eps, flow_steps=2)
    assert rep["episodes"] == len(eps) and rep["windows"] > rep["positive_windows"] > 0
    old, new = load_run(path).model.state_dict(), load_run(tmp_path / "ih").model.state_dict()
    assert old.keys() == new.keys()
    for k in old:
        if k not in ("head.weight", "head.bias"):
            assert torch.equal(old[k], new[k]), k
    assert torch.equal(old["head.weight"][1], new["head.weight"][1])  # progress row untouched
    assert not torch.equal(old["head.weight"][0], new["head.weight"][0])
    # the refit lowers the log loss on the imagined windows it was fitted on
    with np.load(tmp_path / "ih" / "imagined_features.npz") as z:
        x, y = z["features"].astype(np.float64), z["labels"]

    def bce(w, b):
        p = np.clip(1 / (1 + np.exp(-(x @ w + b))), 1e-9, 1 - 1e-9)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    assert bce(new["head.weight"][0].double().numpy(), float(new["head.bias"][0])) < \
        bce(old["head.weight"][0].double().numpy(), float(old["head.bias"][0]))
    # a rerun with the same settings fits again from the saved features without imagining anything
    monkeypatch.setattr(imagined_head, "imagined_head_features", lambda *a, **k: pytest.fail("re-imagined"))
    tune_success_head(path, tmp_path / "ih", eps, flow_steps=2)
    with pytest.raises(ConfigError, match="new directory"):
        tune_success_head(path, path, eps, flow_steps=2)


def test_fit_recovers_a_linear_rule_the_trained_head_misses():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    owner = np.repeat(np.arange(200), 10)
    y = x[:, 3] + 0.3 * rng.normal(size=2000) > 0.5
    fit = fit_success_head({"features": x, "labels": y, "episode": owner}, np.zeros(16), 0.0)
    val = fit["validation"]
    assert val["trained_head"]["window_auc"] == pytest.approx(0.5)  # a zero head ranks nothing
    assert max(g["window_auc"] for g in val["grid"]) > 0.95
    assert abs(fit["weight"][3]) > 5 * np.abs(np.delete(fit["weight"], 3)).max()
    with pytest.raises(ConfigError, match="both outcomes"):
        fit_success_head({"features": x, "labels": np.zeros(2000, bool), "episode": owner}, np.zeros(16), 0.0)


def test_cli_picks_training_episodes_evenly_by_outcome(run, tmp_path):
    import json

    from typer.testing import CliRunner

    from flexwm.cli import app

    path, _ = run
    r = CliRunner().invoke(app, ["tune-head", "--ckpt", str(path), "--out", str(tmp_path / "ih"), "--max-episodes",
                                 "12", "--flow-steps", "2"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ih" / "head_tuning.json").read_text())
    assert rep["outcomes"] == {"success": 4, "failure": 4, "play": 4} and rep["episodes"] == 12
    split = json.loads((path / "split.json").read_text())
    with __import__("numpy").load(tmp_path / "ih" / "imagined_features.npz") as z:
        keys = json.loads(str(z["settings"]))["episode_keys"]
    held_seeds = {i for i in split["heldout"][0]}  # toy episode i has seed i
    assert not held_seeds & {int(k.split("/")[-1]) for k in keys}
    # writing over the run itself is refused
    r = CliRunner().invoke(app, ["tune-head", "--ckpt", str(path), "--out", str(path)])
    assert r.exit_code != 0 and "new directory" in str(r.exception)


def test_episode_level_refit_learns_hard_negatives_and_validates_by_group():
    """The multiple-instance fit scores an episode by its best window: a head that fires on one window of every
    failure (the closed-loop imagination's failure mode) is corrected, validated on held-out groups."""
    from flexwm.evaluation.imagined_head import fit_logistic_max, fit_success_head_episodes

    rng = np.random.default_rng(0)
    E, T, d = 120, 6, 5
    y = rng.random(E) < 0.5
    x = rng.normal(0, 0.3, (E, T, d)).astype(np.float32)
    x[y, -1, 0] += 2.0  # real successes: a late window carries the success signal on dim 0
    x[:, 2, 1] += 2.0  # every episode: one window with a spurious signal on dim 1
    w0, b0 = np.array([1.0, 1.0, 0, 0, 0]), -1.0  # the trained head listens to both dims
    fit = fit_success_head_episodes(x, y, np.arange(E) % 3, w0, b0)
    assert fit["validation"]["trained_head_auc"] < 0.8 < fit["train_auc"]
    assert max(g["held_out_group_auc"] for g in fit["validation"]["grid"]) > 0.8
    assert fit["weight"][1] < 0.5 < fit["weight"][0]  # the spurious dim is unlearned, the real one kept
    # a strong pull towards the trained head keeps it
    w, _ = fit_logistic_max(x, y, w0, b0, l2=1e4)
    assert np.allclose(w, w0, atol=0.05)
    with pytest.raises(ConfigError, match="both outcomes"):
        fit_success_head_episodes(x, np.ones(E, bool), np.arange(E) % 3, w0, b0)
    with pytest.raises(ConfigError, match="two groups"):
        fit_success_head_episodes(x, y, np.zeros(E), w0, b0)
