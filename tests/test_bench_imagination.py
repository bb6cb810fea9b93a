"""benchmarks/imagination.py: suite statistics are computed per policy over tasks, at any threshold, from the
saved per-frame imagined P(success), and an incomplete suite is refused."""

from __future__ import annotations

import pytest

from tests.helpers.benchmark_scripts import load_benchmark


def record(task, policy, real, imagined_max, kind="bc", frames=3):
    """One (task, policy) file: real outcomes and imagined traces whose maximum is `imagined_max` per episode."""
    trace = [[0.0] * (frames - 1) + [p] for p in imagined_max]
    return {"task": task, "policy": policy, "kind": kind, "imagination": "closed-loop", "real_success": real,
            "imagined_prob": {"m": trace}}


def test_suite_stats_rank_policies_over_tasks():
    img = load_benchmark("imagination")
    recs = []
    for task in ("a", "b"):
        recs += [record(task, "good", [True, True, True, False], [0.9, 0.8, 0.7, 0.2]),
                 record(task, "mid", [True, False, True, False], [0.9, 0.1, 0.6, 0.3]),
                 record(task, "bad", [False, False, False, False], [0.1, 0.2, 0.6, 0.0])]
    s = img.suite_stats(recs, "m", 0.5)
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["good"]["real"]["successes"] == 6 and rows["good"]["imagined"]["successes"] == 6
    assert rows["bad"]["imagined"]["successes"] == 2 and s["policies"] == 3 and s["tasks"] == ["a", "b"]
    assert s["pearson"] > 0.9 and s["mmrv"] == 0.0 and s["episodes_per_policy_task"] == 4
    # a stricter threshold changes the imagined rates (read from the traces, not re-run)
    strict = img.suite_stats(recs, "m", 0.75)
    assert {r["name"]: r["imagined"]["successes"] for r in strict["rows"]} == {"good": 4, "mid": 2, "bad": 0}


def test_suite_stats_refuse_an_incomplete_suite():
    img = load_benchmark("imagination")
    recs = [record("a", "p", [True], [0.9]), record("a", "q", [False], [0.1]), record("b", "p", [True], [0.9])]
    with pytest.raises(SystemExit, match="incomplete"):
        img.suite_stats(recs, "m", 0.5)


def test_rl_and_failure_play_summaries(tmp_path):
    import json

    img = load_benchmark("imagination")
    summ = lambda k, n=10: {"summary": {"rate": k / n, "successes": k, "episodes": n}}  # noqa: E731
    rl = {"tasks": ["a", "b"], "episodes_per_task": 10, "run": "r", "seed": 1, "improve_config": {},
          "per_task": {"a": {"before": summ(2), "imagination": summ(5), "real": summ(6)},
                       "b": {"before": summ(4), "imagination": summ(3), "real": summ(8)}}}
    (tmp_path / "rl.json").write_text(json.dumps(rl))
    s = img.rl_summary(str(tmp_path / "rl.json"))
    assert s["before"] == [0.2, 0.4] and s["after_imagination"] == [0.5, 0.3] and s["after_real"] == [0.6, 0.8]
    assert s["gain_imagination_points"] == pytest.approx(10.0) and s["gain_real_points"] == pytest.approx(40.0)
    assert s["worst_task_change_imagination_points"] == pytest.approx(-10.0) and s["episodes"] == 10

    for name, outcomes in (("with", []), ("without", ["success"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run_config.json").write_text(json.dumps(
            {"train": {"steps": 10, "batch_size": 4}, "train_episodes": {"outcomes": outcomes}}))
    by_outcome = {"failure": {"windows": 3, "h4": {"latent_mse": 0.2, "psnr_db": 25.0}}}
    (tmp_path / "ac.json").write_text(json.dumps({"command": "c", "runs": {
        n: {"run_dir": str(tmp_path / n), "by_outcome": by_outcome} for n in ("with", "without")}}))
    (tmp_path / "cal.json").write_text(json.dumps({"auc": 0.7, "threshold": 0.5, "flow_steps": 4}))
    fp = img.failure_play_summary(str(tmp_path / "ac.json"), {"with": str(tmp_path / "cal.json")})
    assert fp["models"]["with"]["latent_mse"] == {"failure": {"h4": 0.2}} and fp["models"]["with"]["samples"] == 40
    assert fp["models"]["with"]["calibration"]["auc"] == 0.7 and "calibration" not in fp["models"]["without"]
    assert fp["models"]["without"]["train_episodes"] == {"outcomes": ["success"]}
