"""Errors raised by flexwm. Each message names the problem and the fix."""


class FlexWMError(Exception):
    """Base class for errors that flexwm reports to the user as a clear message (no bare traceback)."""


class ConfigError(FlexWMError, ValueError):
    """A config has an unknown key, a value of the wrong type or a value out of range."""


class DatasetError(FlexWMError):
    """A dataset is missing, damaged, or does not match what is asked of it."""


class EnvError(FlexWMError, ValueError):
    """An environment, task or action is invalid."""


class CheckpointError(FlexWMError):
    """A checkpoint is missing, damaged, unsafe or does not match the model."""
