"""Stub: torchvision's compiled ops do not match this CPU torch; LeRobot's dataset code only needs names."""
from torchvision import transforms  # noqa: F401


def set_video_backend(name):
    raise RuntimeError("torchvision video decoding is not available in this stub")
