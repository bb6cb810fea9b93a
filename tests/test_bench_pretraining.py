"""benchmarks/pretraining.py: per-task rows and pooled Wilson intervals from two paired evaluations, the compute
of each arm from its run configs, and unpaired evaluations refused."""

from __future__ import annotations

import json

import pytest

from tests.helpers.benchmark_scripts import load_benchmark


def eval_file(path, successes: dict[str, list[bool]], seed=20000):
    per_task = {t: {"env": "metaworld", "seed": seed, "summary": {"episodes": len(s), "successes": sum(s)},
                    "per_episode": [{"seed": seed + i, "success": x} for i, x in enumerate(s)]}
                for t, s in successes.items()}
    path.write_text(json.dumps({"complete": True, "per_task": per_task, "policy": "wam", "flow_steps": 4,
                                "command": "flexwm eval ..."}))
    return str(path)


def run_dir(path, steps, modes, per_task=None, init_from=None):
    path.mkdir()
    cfg = {"train": {"steps": steps, "batch_size": 32}, "model": {"mode_weights": modes},
           "train_episodes": {"sources": ["expert"], "outcomes": [], "per_task": per_task}, "init_from": init_from}
    (path / "run_config.json").write_text(json.dumps(cfg))
    return str(path)


def test_assemble_pools_paired_evaluations(tmp_path):
    pre = load_benchmark("pretraining")
    a = eval_file(tmp_path / "a.json", {"t1": [True, True, False, False], "t2": [True, False, False, False]})
    b = eval_file(tmp_path / "b.json", {"t1": [True, False, False, False], "t2": [False] * 4})
    flex = {"wam": 1.0, "ac": 1.0, "video": 0.5}
    out = pre.assemble({"video-pretrained": a, "scratch": b},
                       run_dir(tmp_path / "p", 3000, {"video": 1.0, "wam": 0.0}),
                       {"video-pretrained": run_dir(tmp_path / "f", 2000, flex, 10, str(tmp_path / "p")),
                        "scratch": run_dir(tmp_path / "s", 2000, flex, 10)})
    rows = {(r["init"], r["task"]): r for r in out["rows"]}
    assert rows["video-pretrained", "t1"]["successes"] == 2 and rows["scratch", "t2"]["successes"] == 0
    assert all(r["demos_per_task"] == 10 and r["mean_max_coverage"] is None for r in out["rows"])
    assert out["pooled"]["video-pretrained"]["successes"] == 3 and out["pooled"]["scratch"]["episodes"] == 8
    lo, hi = out["pooled"]["scratch"]["ci95"]
    assert 0 < lo < 1 / 8 < hi < 1
    assert out["difference_points"] == pytest.approx(25.0)
    # paired: 2 episodes only the pretrained model solves, none only scratch solves, 8 pairs
    assert (out["only_pretrained_succeeds"], out["only_scratch_succeeds"], out["paired_episodes"]) == (2, 0, 8)
    lo, hi = out["difference_ci95_points"]
    assert lo < 25.0 < hi and hi - lo > 10
    assert out["compute"]["video-pretrained"]["pretrain"]["modes"] == {"video": 1.0}
    assert out["compute"]["scratch"]["finetune"]["samples"] == 64000


def test_unpaired_evaluations_are_refused(tmp_path):
    pre = load_benchmark("pretraining")
    a = eval_file(tmp_path / "a.json", {"t1": [True, False]})
    b = eval_file(tmp_path / "b.json", {"t1": [True, False]}, seed=30000)
    with pytest.raises(SystemExit, match="same tasks and reset seeds"):
        pre.assemble({"video-pretrained": a, "scratch": b}, None, {})
    with pytest.raises(SystemExit, match="INIT=PATH"):
        pre._pairs(["pretrained=x"], "--eval")
