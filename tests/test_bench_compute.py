"""benchmarks/compute.py: FLOPs per training sample are counted on the real models and scale with their size."""

from __future__ import annotations

import pytest

from tests.helpers.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def compute():
    return load_benchmark("compute")


def test_world_model_flops_grow_with_depth(compute):
    small = compute.world_model_flops("tiny", n_layers=2)
    big = compute.world_model_flops("tiny", n_layers=4)
    assert small["flops_per_sample"] > 0
    # the transformer blocks dominate: twice the blocks is clearly more, but less than 2x (embeddings, heads)
    assert 1.3 * small["flops_per_sample"] < big["flops_per_sample"] < 2.0 * small["flops_per_sample"]
    assert big["parameters"] > small["parameters"]


def test_bc_and_tokenizer_flops_are_counted(compute):
    tiny, cpu = compute.bc_flops("tiny"), compute.bc_flops("cpu")
    assert 0 < tiny["flops_per_sample"] < cpu["flops_per_sample"]
    tok = compute.tokenizer_flops("tiny")
    assert tok["train_flops_per_sample"] > tok["encode_flops_per_frame"] > 0


def test_headline_rows_are_paired_by_seed(tmp_path):
    """benchmarks/headline.py: one row per (model, way to act, task); evaluations on other seeds are refused."""
    headline = load_benchmark("headline")

    def result(seeds, succ):
        ep = [{"seed": s, "success": x} for s, x in zip(seeds, succ)]
        return {"complete": True, "env": "metaworld", "per_task": {"reach-v3": {
            "env": "metaworld", "summary": {"episodes": len(seeds), "successes": sum(succ)},
            "latency": {"mean_s": 0.05}, "per_episode": ep}}}

    a = headline.rows_of("flexible", "wam", result([1, 2], [True, False]))
    b = headline.rows_of("bc", "bc", result([1, 2], [True, True]))
    assert [(r["model"], r["successes"], r["episodes"]) for r in a + b] == [("flexible", 1, 2), ("bc", 2, 2)]
    headline.check_paired(a + b)
    with pytest.raises(SystemExit, match="reset seeds"):
        headline.check_paired(a + headline.rows_of("bc", "bc", result([3, 4], [True, True])))
    with pytest.raises(SystemExit, match="not complete"):
        headline.rows_of("bc", "bc", {**result([1], [True]), "complete": False})
