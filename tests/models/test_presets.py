"""The presets are the sizes the docs promise: gpu >= 50M parameters with bf16 autocast, cpu small."""

from flexwm.models.world_model import FlexWorldModel, preset
from flexwm.training.run import preset as run_preset

EMB = {"sawyer": {"action_dim": 4, "proprio_dim": 4}}


def n_params(name: str) -> int:
    return sum(p.numel() for p in FlexWorldModel(preset(name, embodiments=EMB)).parameters())


def test_preset_sizes():
    assert n_params("gpu") >= 50_000_000
    assert 1_000_000 <= n_params("cpu") <= 10_000_000
    assert n_params("tiny") < n_params("cpu")
    gpu = run_preset("gpu", data=["d"])
    assert gpu.train.amp == "bf16" and gpu.train.device == "cuda"
