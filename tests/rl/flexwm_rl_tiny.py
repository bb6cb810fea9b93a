"""A tiny untrained world model whose outputs depend on its inputs, for the RL and policy-evaluation tests."""

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
