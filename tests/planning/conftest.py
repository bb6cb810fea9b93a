"""A tiny untrained FlexWorldModelWrapper shared by the planning tests."""

from __future__ import annotations

import pytest
import torch

from flexwm.models.interface import FlexWorldModelWrapper
from flexwm.models.text import make_text_encoder
from flexwm.models.tokenizer import make_tokenizer
from flexwm.models.world_model import FlexWorldModel, preset


@pytest.fixture(scope="session")
def wm() -> FlexWorldModelWrapper:
    """Tiny preset (4x8x8 latents of 64x64 frames, H = 4 actions, frame_stride 2), 2 flow steps."""
    torch.manual_seed(0)
    model = FlexWorldModel(preset("tiny", embodiments={"sawyer": {"action_dim": 4, "proprio_dim": 4}}))
    with torch.no_grad():  # perturb the zero-initialised output layers so every input matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    return FlexWorldModelWrapper(model, make_tokenizer("tiny", seed=0).eval(), make_text_encoder("hash"),
                                 embodiment="sawyer", steps=2)
