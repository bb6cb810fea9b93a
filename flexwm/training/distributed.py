"""Training across processes started by ``torchrun``: FSDP2 sharding, batch shards and sharded checkpoints.

`Shard` is one process's share of a global batch. Every process draws the randomness of the whole global batch
from generators that are identical on all processes and keeps its own rows, and the loss divides by counts summed
over processes, so N processes compute the gradient of exactly the single-process step (up to float summation
order): same data, same noise, same loss curve, whatever the number of processes.

`shard_model` applies FSDP2 (`torch.distributed.fsdp.fully_shard`) to each transformer block and then to the root,
with bf16 parameters and fp32 gradient reduction when asked (`MixedPrecisionPolicy`). `save_sharded` /
`load_sharded` write and read each process's shards with `torch.distributed.checkpoint` in safetensors files (its
HuggingFace storage: no pickle), so no process ever holds the whole optimizer state.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from flexwm.errors import CheckpointError, ConfigError
from flexwm.models.flow import Shard  # noqa: F401 - the batch share lives with the loss that uses it

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS)


def check_launch(distributed: str, command: list[str] | None = None) -> None:
    """FSDP needs processes started by torchrun; say how to start them."""
    if distributed != "fsdp" or launched_by_torchrun():
        return
    import shlex

    args = shlex.join(command[1:]) if command and len(command) > 1 else "train --data DATA --out RUN ..."
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    raise ConfigError(
        f"config key 'train.distributed' = 'fsdp' needs processes started by torchrun ({', '.join(missing)} not set); "
        f"run: torchrun --nproc_per_node=NUM_GPUS -m flexwm.cli {args}  (across machines add --nnodes=N "
        "--rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=RUN_NAME)")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP wraps one by one (and activation checkpointing recomputes): `model.blocks`."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise ConfigError(f"{type(model).__name__} has no `blocks` ModuleList to shard per block; FSDP and "
                          "activation checkpointing need one")
    return list(blocks)


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass (`torch.utils.checkpoint`, non-reentrant) instead
    of keeping them; the model runs its blocks through checkpoint when `gradient_checkpointing` is set."""
    transformer_blocks(model)
    if not hasattr(model, "gradient_checkpointing"):
        raise ConfigError(f"{type(model).__name__} does not support activation checkpointing (no "
                          "`gradient_checkpointing` attribute); set train.activation_checkpointing=false")
    model.gradient_checkpointing = True


def shard_model(model: nn.Module, device: str, world: int, amp: str = "none") -> nn.Module:
    """FSDP2 in place: each block, then the root (which holds embeddings, adapters and heads). amp 'bf16': bf16
    parameters and activations in forward/backward, fp32 gradient reduction, fp32 sharded master weights."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.split(":")[0], (world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if amp == "bf16" \
        else MixedPrecisionPolicy()
    # the model returns views (heads split from one tensor); flex_loss never modifies outputs in place, which is
    # what FSDP2 warns about
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded DTensor (a collective: every process must call it), or `x` itself."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


# ---- sharded checkpoints ---------------------------------------------------------------------------------------
# training_state/sharded/  one safetensors file per process (its shards of the raw weights, EMA weights and
#                          optimizer tensors, with their offsets), written by torch.distributed.checkpoint
# training_state/rng/      rank-NNNNN.safetensors + .json: each process's random generator states


def _flat_state(model: nn.Module, ema: dict[str, torch.Tensor] | None, optimizer: torch.optim.Optimizer,
                optim_keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """One flat name -> tensor dict of everything sharded. With `optim_keys` (loading), optimizer entries are
    placeholders of the right shape and sharding for exactly the saved keys."""
    flat = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        flat.update({f"ema.{k}": v for k, v in ema.items()})
    params = dict(model.named_parameters())
    if optim_keys is None:
        names = {p: n for n, p in params.items()}
        for p, st in optimizer.state.items():
            for key, val in st.items():
                if not torch.is_tensor(val):
                    raise CheckpointError(f"optimizer state {key!r} is not a tensor; sharded checkpoints hold tensors")
                flat[f"optim.{names[p]}.{key}"] = val
    else:
        for name in optim_keys:
            pname, key = name[len("optim."):].rsplit(".", 1)
            p = params[pname]
            flat[name] = torch.zeros((), dtype=torch.float32) if key == "step" else torch.zeros_like(p)
    return flat


def save_sharded(directory: Path, rank: int, model: nn.Module, ema: dict[str, torch.Tensor] | None,
                 optimizer: torch.optim.Optimizer, rng: dict[str, torch.Tensor], rng_meta: dict) -> dict:
    """Every process writes its shards into `directory` (on a filesystem all processes share). Returns the JSON
    metadata the checkpoint's state.json keeps (optimizer keys and parameter groups)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    flat = _flat_state(model, ema, optimizer)
    dcp.save(flat, storage_writer=HuggingFaceStorageWriter(str(directory / "sharded"), save_distributed=True))
    (directory / "rng").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in rng.items()}, str(directory / "rng" / f"rank-{rank:05d}.safetensors"))
    (directory / "rng" / f"rank-{rank:05d}.json").write_text(json.dumps(rng_meta))
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"optim_keys": sorted(k for k in flat if k.startswith("optim.")), "optim_groups": groups}


def load_sharded(directory: Path, rank: int, model: nn.Module, ema: dict[str, torch.Tensor] | None,
                 optimizer: torch.optim.Optimizer, meta: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Read this process's shards into the model, EMA and optimizer in place (any number of processes: the
    shards are resharded). Returns this process's RNG tensors and metadata (rank 0's when it has none)."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    sharded = directory / "sharded"
    if not sharded.is_dir():
        raise CheckpointError(f"{directory.parent} was not written by an FSDP run (no training_state/sharded); "
                              "resume it without train.distributed=fsdp, or start a new --out")
    flat = _flat_state(model, ema, optimizer, optim_keys=meta["optim_keys"])
    dcp.load(flat, storage_reader=HuggingFaceStorageReader(str(sharded)))
    params = dict(model.named_parameters())
    state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}
    for name in meta["optim_keys"]:
        pname, key = name[len("optim."):].rsplit(".", 1)
        state.setdefault(params[pname], {})[key] = flat[name]
    optimizer.state.clear()
    optimizer.state.update(state)
    for group, saved in zip(optimizer.param_groups, meta["optim_groups"]):
        group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    rng_dir = directory / "rng"
    own = rng_dir / f"rank-{rank:05d}.safetensors"
    own = own if own.exists() else rng_dir / "rank-00000.safetensors"
    return load_file(str(own)), json.loads(own.with_suffix(".json").read_text())


def is_sharded_checkpoint(ckpt: Path) -> bool:
    return (Path(ckpt) / "training_state" / "sharded").is_dir()


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
