"""Tiny untrained world models (the `tiny` preset, sawyer embodiment, 2 flow steps) whose outputs depend on
their inputs, behind the narrow `FlexWorldModelWrapper` interface.

- `make_tiny_wm`: zero-initialised layers filled and the action input amplified, so actions visibly change
  the imagined frames (RL and policy-evaluation tests).
- `make_perturbed_tiny_wm`: every parameter perturbed by small noise (planning tests, the `wm` fixture).
"""

import torch

from flexwm.models.interface import FlexWorldModelWrapper
from flexwm.models.text import make_text_encoder
from flexwm.models.tokenizer import make_tokenizer
from flexwm.models.world_model import FlexWorldModel, preset


def make_tiny_wm(seed: int = 0) -> FlexWorldModelWrapper:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = FlexWorldModel(preset("tiny", embodiments={"sawyer": {"action_dim": 4, "proprio_dim": 4}})).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised layers (adaLN, outputs) would make the output ignore the input
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        model.adapters["sawyer"].action_in.weight.mul_(20.0)  # so that actions visibly change the imagined frames
    tok = make_tokenizer("tiny", seed=seed).eval()
    return FlexWorldModelWrapper(model, tok, make_text_encoder("hash"), embodiment="sawyer", steps=2)


def make_perturbed_tiny_wm() -> FlexWorldModelWrapper:
    """Tiny preset (4x8x8 latents of 64x64 frames, H = 4 actions, frame_stride 2), 2 flow steps."""
    torch.manual_seed(0)
    model = FlexWorldModel(preset("tiny", embodiments={"sawyer": {"action_dim": 4, "proprio_dim": 4}}))
    with torch.no_grad():  # perturb the zero-initialised output layers so every input matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    return FlexWorldModelWrapper(model, make_tokenizer("tiny", seed=0).eval(), make_text_encoder("hash"),
                                 embodiment="sawyer", steps=2)
