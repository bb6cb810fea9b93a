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
