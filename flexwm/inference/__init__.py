"""Inference: load a trained run as the narrow WorldModel interface and sample any mode."""

from flexwm.inference.load import load_run

__all__ = ["load_run"]
