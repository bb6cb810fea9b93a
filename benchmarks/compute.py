"""Training compute of each model, as "samples seen x FLOPs per training sample" (forward + backward).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one real training step of the real model
(matmuls and convolutions; elementwise work is not counted, as is usual for transformer/conv FLOP counts).
The world model's compute has three parts: the frame tokenizer's training, encoding every training frame into
the latent cache once, and the world model's own training steps. Behaviour cloning trains on pixels, so it
has only its own steps.

    python benchmarks/compute.py --wm-preset cpu --wm-samples 128000 --bc-preset cpu --bc-samples 128000 \
        --tokenizer-samples 192000 --cached-frames 242000 --out benchmarks/results/compute_cpu.json

Each variant of the world model (flexible, wam-only, ac-only) runs the same network on the same token
sequence (an absent modality is a learned token, not a shorter sequence), so their FLOPs per sample are equal
and their compute differs only by the samples they see.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

EMBODIMENTS = {"sawyer": {"action_dim": 4, "proprio_dim": 4}}


def _count(fn: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def world_model_flops(preset: str, batch: int = 4, **overrides: Any) -> dict[str, Any]:
    """FLOPs of one training sample of the world model (forward + backward of `flex_loss`)."""
    from flexwm.models import flow
    from flexwm.models.world_model import FlexWorldModel
    from flexwm.models.world_model import preset as wm_preset

    cfg = wm_preset(preset, embodiments=overrides.pop("embodiments", EMBODIMENTS), **overrides)
    model = FlexWorldModel(cfg)
    spec = next(iter(cfg.embodiments.values()))
    emb = next(iter(cfg.embodiments))
    g = torch.Generator().manual_seed(0)
    b = dict(embodiment=emb, context=torch.randn(batch, cfg.context_frames, *cfg.latent_shape, generator=g),
             future=torch.randn(batch, cfg.future_frames, *cfg.latent_shape, generator=g),
             actions=torch.rand(batch, cfg.action_horizon, spec["action_dim"], generator=g) * 2 - 1,
             proprio=torch.randn(batch, spec["proprio_dim"], generator=g),
             text=torch.randn(batch, cfg.text_dim, generator=g), has_text=torch.ones(batch, dtype=torch.bool),
             outcome=["success"] * batch, success=torch.ones(batch), progress=torch.rand(batch, generator=g),
             valid=torch.ones(batch, cfg.action_horizon, dtype=torch.bool))
    modes = flow.sample_modes(batch, b["outcome"], cfg, torch.Generator().manual_seed(1))

    def step() -> None:
        loss, _ = flow.flex_loss(model, b, modes, torch.Generator().manual_seed(2))
        loss.backward()

    params = sum(p.numel() for p in model.parameters())
    return {"flops_per_sample": _count(step) / batch, "parameters": params}


def tokenizer_flops(preset: str, image_size: int = 64, batch: int = 4) -> dict[str, Any]:
    """FLOPs of one tokenizer training sample (encode + decode, forward + backward) and of encoding one frame."""
    from flexwm.models.tokenizer import ConvAutoencoder
    from flexwm.models.tokenizer import preset as tok_preset

    tok = ConvAutoencoder(tok_preset(preset))
    x = torch.rand(batch, 3, image_size, image_size) * 2 - 1

    def train_step() -> None:
        mean, _ = tok.encode_dist(x)
        out = tok.decode_raw(mean)
        out.float().pow(2).mean().backward()

    def encode() -> None:
        with torch.no_grad():
            tok.encode_dist(x)

    return {"train_flops_per_sample": _count(train_step) / batch, "encode_flops_per_frame": _count(encode) / batch,
            "parameters": sum(p.numel() for p in tok.parameters())}


def bc_flops(preset: str, image_size: int = 64, batch: int = 4) -> dict[str, Any]:
    """FLOPs of one behaviour-cloning training sample (forward + backward)."""
    import dataclasses

    from flexwm.planning.bc import BCModel
    from flexwm.planning.bc import preset as bc_preset

    cfg = dataclasses.replace(bc_preset(preset), image_size=(image_size, image_size))
    model = BCModel(cfg)
    x = torch.rand(batch, 3, image_size, image_size) * 2 - 1
    p = torch.randn(batch, cfg.proprio_dim)
    t = torch.randn(batch, cfg.text_dim)

    def step() -> None:
        model(x, p, t).pow(2).mean().backward()

    return {"flops_per_sample": _count(step) / batch, "parameters": sum(q.numel() for q in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wm-preset", default="cpu")
    ap.add_argument("--wm-samples", type=float, action="append", default=[],
                    help="samples seen by a world model (repeat with --wm-name for several)")
    ap.add_argument("--wm-name", action="append", default=[], help="name of each --wm-samples entry")
    ap.add_argument("--bc-preset", default="cpu")
    ap.add_argument("--bc-samples", type=float, default=None)
    ap.add_argument("--tokenizer-samples", type=float, default=0.0, help="frames seen by the tokenizer's training")
    ap.add_argument("--cached-frames", type=float, default=0.0, help="frames encoded into the latent cache")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    wm = world_model_flops(args.wm_preset)
    tok = tokenizer_flops(args.wm_preset)
    shared = args.tokenizer_samples * tok["train_flops_per_sample"] + args.cached_frames * tok["encode_flops_per_frame"]
    compute: dict[str, Any] = {}
    names = args.wm_name or [f"world-model-{i}" for i in range(len(args.wm_samples))]
    for name, samples in zip(names, args.wm_samples, strict=True):
        compute[name] = {"samples": samples, "flops": samples * wm["flops_per_sample"] + shared,
                         "flops_world_model": samples * wm["flops_per_sample"], "flops_tokenizer_and_cache": shared}
    out: dict[str, Any] = {"world_model": wm, "tokenizer": tok, "compute": compute}
    if args.bc_samples is not None:
        bc = bc_flops(args.bc_preset)
        out["bc"] = bc
        compute["bc"] = {"samples": args.bc_samples, "flops": args.bc_samples * bc["flops_per_sample"]}
    write_result(args.out, out)


if __name__ == "__main__":
    main()
