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
