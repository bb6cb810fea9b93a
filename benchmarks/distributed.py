"""Training throughput and model FLOPs utilisation (MFU) of the world model, one process or many under torchrun.

The real model, loss and training loop (`flexwm.training.Trainer`, FSDP2 with --fsdp) on synthetic latents of the
preset's shape; FLOPs per sample are counted as in benchmarks/compute.py (forward + backward of flex_loss, matmuls
only). MFU = samples/s x FLOPs per sample / (processes x peak FLOP/s of one device; pass the device's dense bf16
peak, e.g. 989 TFLOP/s for an H100 SXM, 312 for an A100).

    # one GPU machine, 8 GPUs, the gpu preset, FSDP2 + bf16
    torchrun --standalone --nproc_per_node=8 benchmarks/distributed.py --preset gpu --fsdp --amp bf16 \
        --batch-size 256 --peak-tflops 989 --out benchmarks/results/distributed_gpu.json
    # a larger trunk: the same with --set d_model=2048 --set n_layers=24 --set n_heads=16 (--activation-checkpointing)
    # this machine, as a smoke test (2 CPU processes over gloo)
    torchrun --standalone --nproc_per_node=2 benchmarks/distributed.py --preset tiny --fsdp --device cpu \
        --batch-size 16 --steps 8 --out /tmp/distributed_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from compute import EMBODIMENTS, world_model_flops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpu", help="world-model preset (tiny | cpu | gpu)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="model config key=value")
    ap.add_argument("--batch-size", type=int, default=256, help="global batch size")
    ap.add_argument("--steps", type=int, default=30, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--fsdp", action="store_true", help="train.distributed=fsdp (else DDP under torchrun)")
    ap.add_argument("--amp", default="none", choices=("none", "bf16"))
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense peak TFLOP/s of one device")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from flexwm.models import flow
    from flexwm.models.world_model import FlexWorldModel
    from flexwm.models.world_model import preset as wm_preset
    from flexwm.training import TrainConfig, Trainer
    from flexwm.training.distributed import Shard
    from flexwm.training.run import _Forward

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.overrides)}
    cfg = wm_preset(args.preset, embodiments=EMBODIMENTS, **overrides)
    torch.manual_seed(0)
    model = FlexWorldModel(cfg)
    B, emb = args.batch_size, next(iter(cfg.embodiments))
    A, P = EMBODIMENTS[emb]["action_dim"], EMBODIMENTS[emb]["proprio_dim"]
    warmup = 3
    tcfg = TrainConfig(steps=warmup + args.steps, batch_size=B, warmup_steps=0, ema_decay=0.0, log_every=10**6,
                       ckpt_every=10**9, device=args.device, amp=args.amp, distributed="fsdp" if args.fsdp else "ddp",
                       activation_checkpointing=args.activation_checkpointing)

    def make_batch(indices: torch.Tensor) -> dict:  # the global batch's indices: this process's rows of it
        n = len(indices[shard.rows(len(indices))])
        g = torch.Generator().manual_seed(int(indices[0]) * 1000 + shard.rank)
        return {"context": torch.randn(n, cfg.context_frames, *cfg.latent_shape, generator=g),
                "future": torch.randn(n, cfg.future_frames, *cfg.latent_shape, generator=g),
                "actions": torch.rand(n, cfg.action_horizon, A, generator=g) * 2 - 1,
                "proprio": torch.randn(n, P, generator=g), "text": torch.randn(n, cfg.text_dim, generator=g),
                "has_text": torch.ones(n, dtype=torch.bool), "success": torch.ones(n), "progress": torch.ones(n),
                "valid": torch.ones(n, cfg.action_horizon, dtype=torch.bool), "embodiment": emb}

    shard = Shard()

    def loss_fn(net: torch.nn.Module, batch: dict, generator: torch.Generator):
        dev = next(net.parameters()).device
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
        modes = flow.sample_modes(B, torch.zeros(B, dtype=torch.long), cfg, generator)  # the whole batch's
        return flow.flex_loss(_Forward(net, getattr(net, "module", net)), batch, modes, generator,
                              shard=shard if shard.world > 1 else None)

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, loss_fn, make_batch, 10 * B, tcfg, run_dir, {}, progress=False, global_batch=True)
        shard = trainer.shard
        stamps: list[float] = []

        def on_step(step: int, loss: float, metrics: dict) -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        trainer.save = lambda: None  # type: ignore[method-assign]  # timing only: no checkpoints
        trainer.fit(on_step=on_step)
    step_s = float(np.median(np.diff(stamps[warmup - 1:])))
    flops = world_model_flops(args.preset, **overrides)
    samples_per_s = B / step_s
    result = {"preset": args.preset, "model_overrides": overrides, "parameters": flops["parameters"],
              "processes": shard.world, "fsdp": args.fsdp, "amp": args.amp,
              "activation_checkpointing": args.activation_checkpointing, "device": args.device,
              "global_batch": B, "steps_timed": len(stamps) - warmup, "median_step_s": step_s,
              "samples_per_s": samples_per_s, "flops_per_sample": flops["flops_per_sample"],
              "model_tflops_per_s": samples_per_s * flops["flops_per_sample"] / 1e12}
    if args.peak_tflops:
        result["peak_tflops_per_device"] = args.peak_tflops
        result["mfu"] = result["model_tflops_per_s"] / (args.peak_tflops * shard.world)
    if shard.rank == 0:
        print(write_result(args.out, result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
