import json

import numpy as np
import pytest
import torch

from flexwm.errors import ConfigError, EnvError
from flexwm.evaluation.policy_eval import compare, describe_correlation, evaluate_suite, load_suite, parse_suite
from flexwm.rl.toy import LineEnv, LineWorldModel
from tests.helpers.tiny_world_model import make_tiny_wm
from tests.helpers.tracking import on_a_terminal

SUITE = [{"name": "expert", "kind": "expert"}, {"name": "noisy-1.5", "kind": "noisy", "noise": 1.5},
         {"name": "random", "kind": "random"}]


def test_suite_yaml_typo_names_the_policy_and_the_field(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("policies:\n  - {name: expert, kind: expert}\n  - {name: noisy-0.3, kind: noisy, nosie: 0.3}\n")
    with pytest.raises(ConfigError, match=r"policy 'noisy-0\.3' \(policies\[1\]\).*'nosie'.*Did you mean 'noise'"):
        load_suite(path)
    with pytest.raises(ConfigError, match=r"policy 'e' .*field 'kind' = 'expret'.*Did you mean 'expert'"):
        parse_suite([{"name": "e", "kind": "expret"}])
    with pytest.raises(ConfigError, match=r"policy 'n' .*'noise' is required"):
        parse_suite([{"name": "n", "kind": "noisy"}])
    with pytest.raises(ConfigError, match=r"policy 'a' \(policies\[1\]\).*used twice"):
        parse_suite([{"name": "a", "kind": "random"}, {"name": "a", "kind": "expert"}])
    with pytest.raises(ConfigError, match=r"policy 'w' .*field 'mode' = 'wma'.*Did you mean 'wam'"):
        parse_suite([{"name": "w", "kind": "flexwm", "mode": "wma"}])
    with pytest.raises(ConfigError, match="top-level"):
        parse_suite({"policies": SUITE, "episodes": 3})
    path.write_text("policies:\n  - {name: expert, kind: expert}\n  - {name: wm, kind: flexwm, mode: wam}\n")
    assert [s.kind for s in load_suite(path)] == ["expert", "flexwm"]


def test_compare_plumbing():
    real = [0.1, 0.5, 0.9]
    same = compare(real, real)
    assert same["pearson"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0) and same["mmrv"] == 0.0
    swapped = compare(real, [0.1, 0.9, 0.5])
    assert swapped["mmrv"] == pytest.approx(0.8 / 3) and swapped["pearson"] < 1.0
    assert np.isnan(compare([0.5], [0.5])["pearson"])


def test_an_undefined_correlation_is_said_in_words_never_nan():
    """A rate that is the same for every policy leaves Pearson undefined: the result says why, the graded imagined
    score keeps a defined correlation where it varies, and no summary line ever reads "nan"."""
    flat_real = compare([0.0, 0.0, 0.0], [0.2, 0.5, 0.1], [0.3, 0.6, 0.2])
    assert np.isnan(flat_real["pearson"]) and np.isnan(flat_real["pearson_prob"])
    assert "real success is 0% for every policy" in flat_real["correlation_note"]
    flat_imagined = compare([1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.9, 0.8, 0.6])
    assert np.isnan(flat_imagined["pearson"]) and flat_imagined["pearson_prob"] > 0.9
    assert "imagines success 100% for every policy" in flat_imagined["correlation_note"]
    defined = compare([1.0, 0.5, 0.0], [0.8, 0.6, 0.1], [0.7, 0.5, 0.2])
    assert defined["correlation_note"] is None and defined["pearson"] > 0.9
    for stats in (flat_real, flat_imagined, defined, compare([0.5], [0.5])):
        policies = [{}] * 3
        line = describe_correlation({**stats, "policies": policies})
        saved = describe_correlation(json.loads(json.dumps({**stats, "policies": policies},
                                                           default=str).replace("NaN", "null")))
        assert "nan" not in line.lower() and line == saved, line
    assert "for every policy" in describe_correlation({**flat_real, "policies": [{}] * 3})
    assert "imagined mean max P(success): Pearson 0.9" in describe_correlation({**flat_imagined, "policies": []})
    assert describe_correlation({**defined, "policies": []}).startswith("real vs imagined success rate: Pearson 0.9")


def test_exact_world_model_gives_pearson_1_and_mmrv_0(tmp_path):
    """Imagined == real by construction (toy model), so any mismatch is a plumbing bug: wrong start states,
    seeds, action alignment or frame stride."""
    torch.set_num_threads(1)
    result = evaluate_suite(SUITE, LineWorldModel(), env=LineEnv(max_episode_steps=10), episodes=12, seed=0,
                            out_dir=tmp_path)
    rates = {p["name"]: (p["real"]["rate"], p["imagined"]["rate"]) for p in result["policies"]}
    assert all(r == i for r, i in rates.values()), rates
    assert len({r for r, _ in rates.values()}) == 3  # three different rates: the statistics are defined
    assert result["pearson"] == pytest.approx(1.0) and result["mmrv"] == 0.0 and result["correlation_note"] is None
    assert np.isfinite(result["pearson_prob"]) and "Pearson 1.00" in describe_correlation(result)
    modes = {p["name"]: p["imagination"] for p in result["policies"]}
    assert modes == {"expert": "open-loop replay", "noisy-1.5": "open-loop replay", "random": "closed-loop"}
    saved = json.loads((tmp_path / "policy_eval.json").read_text())
    assert saved["policies"][0]["real"]["ci95"][1] <= 1.0 and (tmp_path / "policy_eval.png").stat().st_size > 1000
    # a wrong model (the goal moved) is caught by the same statistics
    wrong = evaluate_suite(SUITE, LineWorldModel(goal=0.2), env=LineEnv(max_episode_steps=10), episodes=12, seed=0)
    assert any(p["imagined"]["rate"] != p["real"]["rate"] for p in wrong["policies"])


def test_image_policies_run_closed_loop_in_the_tiny_model():
    wm = make_tiny_wm()
    suite = [{"name": "random", "kind": "random"}, {"name": "wam", "kind": "flexwm", "mode": "wam"}]
    result = evaluate_suite(suite, wm, env=LineEnv(), episodes=2, seed=0, horizon=6)
    assert result["imagined_frames"] == 3 and [p["imagination"] for p in result["policies"]] == ["closed-loop"] * 2
    for p in result["policies"]:
        assert p["imagined"]["episodes"] == 2 and 0.0 <= p["imagined_mean_max_prob"] <= 1.0
    with pytest.raises(EnvError, match=r"\(32, 32\) frames but the world model expects \(64, 64\)"):
        evaluate_suite(suite, wm, env=LineEnv(image_size=(32, 32)), episodes=1)
    with pytest.raises(EnvError, match="2-d actions but the world model"):
        evaluate_suite(suite, wm, env=LineEnv(action_dim=2), episodes=1)


def test_progress_bar_counts_every_episode_and_frame_and_changes_nothing(monkeypatch):
    torch.set_num_threads(1)
    quiet = evaluate_suite(SUITE, LineWorldModel(), env=LineEnv(max_episode_steps=10), episodes=3, seed=0)
    term = on_a_terminal(monkeypatch)
    shown = evaluate_suite(SUITE, LineWorldModel(), env=LineEnv(max_episode_steps=10), episodes=3, seed=0,
                           progress=True)
    total = 3 * (3 + shown["imagined_frames"])  # 3 policies x (3 real episodes + the imagined frames)
    assert f"{total}/{total}" in term.getvalue()
    for r in (quiet, shown):  # what policy_eval.json holds, timings aside
        for p in r["policies"]:
            p.pop("seconds")
    assert quiet == shown
