"""Generic training machinery: checkpoints (safetensors + JSON only), the training loop, DDP helpers."""

from flexwm.runs import find_latest
from flexwm.training.checkpoint import load_checkpoint, save_checkpoint
from flexwm.training.loop import EpochSampler, TrainConfig, Trainer

__all__ = ["EpochSampler", "TrainConfig", "Trainer", "find_latest", "load_checkpoint", "save_checkpoint"]
