import numpy as np
import pytest

from tests.helpers.tiny_world_model import make_tiny_wm


@pytest.fixture(scope="module")
def tiny_wm():
    return make_tiny_wm()


@pytest.fixture(scope="module")
def start_frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
