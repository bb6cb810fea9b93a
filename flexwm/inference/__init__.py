"""Inference: load a trained model (run, checkpoint or exported folder) as the narrow WorldModel interface."""

from flexwm.inference.load import export, load_run

__all__ = ["load_run", "export"]
