"""A tiny untrained FlexWorldModelWrapper shared by the planning tests."""

from __future__ import annotations

import pytest

from flexwm.models.interface import FlexWorldModelWrapper
from tests.helpers.tiny_world_model import make_perturbed_tiny_wm


@pytest.fixture(scope="session")
def wm() -> FlexWorldModelWrapper:
    """Tiny preset (4x8x8 latents of 64x64 frames, H = 4 actions, frame_stride 2), 2 flow steps."""
    return make_perturbed_tiny_wm()
