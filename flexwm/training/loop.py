"""The training loop: AdamW, warmup + cosine, EMA weights, gradient clipping, atomic checkpoints, exact resume,
and, under ``torchrun`` (gloo on CPU, NCCL on GPUs), DistributedDataParallel or FSDP2 with sharded checkpoints
(`flexwm.training.distributed`).

The loop is model-agnostic (dreamerv3-style: a runner receives its parts). It gets a model, a loss function
``loss_fn(model, batch, generator) -> (loss, metrics)``, a ``make_batch(indices) -> batch`` function and the
number of training examples; it owns the sampler, the optimiser and every random generator, so a run resumed
from a checkpoint continues exactly the loss curve of an uninterrupted run on CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from flexwm.config import field
from flexwm.errors import CheckpointError, FlexWMError
from flexwm.metrics import MetricsLogger, progress_bar
from flexwm.runs import find_latest
from flexwm.training import distributed as dist_mod
from flexwm.training.checkpoint import capture_rng, load_checkpoint, refuse_pickles, restore_rng, save_checkpoint


@dataclass
class TrainConfig:
    steps: int = field(1000, ge=1)
    batch_size: int = field(32, ge=1, help="global batch size (split across DDP ranks)")
    lr: float = field(3e-4, ge=0.0)
    weight_decay: float = field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = field(100, ge=0)
    min_lr_ratio: float = field(0.1, ge=0.0, le=1.0)
    grad_clip: float = field(1.0, ge=0.0, help="max gradient norm (0 = off)")
    ema_decay: float = field(0.999, ge=0.0, le=1.0, help="0 = no EMA")
    log_every: int = field(10, ge=1)
    ckpt_every: int = field(200, ge=1)
    keep_last: int = field(2, ge=1)
    seed: int = 0
    device: str = "cpu"
    amp: str = field("none", choices=("none", "bf16"),
                     help="bf16 mixed precision (GPUs): autocast, or with fsdp bf16 parameters and fp32 reduction")
    distributed: str = field("ddp", choices=("ddp", "fsdp"),
                             help="how torchrun processes share the model: ddp (a replica each) or fsdp (FSDP2 "
                                  "shards parameters, gradients and optimizer state; needs torchrun)")
    activation_checkpointing: bool = field(False, help="recompute each transformer block's activations in the "
                                                       "backward pass (less memory, ~1/3 more compute)")
    compile: bool = False
    num_threads: int = field(0, ge=0, help="torch CPU threads (0 = torch default)")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup then cosine decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class EpochSampler:
    """Shuffled epochs of example indices with a resumable position. Under DDP every rank draws the same global
    batch and takes its own contiguous slice, so N ranks see exactly the batch one process would."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if n < batch_size:
            raise FlexWMError(f"only {n} training examples but batch size {batch_size}; lower the batch size "
                              "or collect more data")
        if batch_size % world_size:
            raise FlexWMError(f"batch size {batch_size} is not divisible by {world_size} DDP processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next_indices(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        batch = self._perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        local = self.batch_size // self.world_size
        return batch[self.rank * local : (self.rank + 1) * local]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n}

    def load_state_dict(self, sd: dict) -> None:
        if sd["n"] != self.n:
            raise FlexWMError(f"the checkpoint was trained on {sd['n']} examples but this dataset has {self.n}; "
                              "resume with the same data, or start a new run")
        self.epoch, self.pos = sd["epoch"], sd["pos"]
        self._perm = self._permutation()


def ddp_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process when not launched by torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def ddp_setup(device: str, always: bool = False) -> tuple[int, int, str]:
    """Join torchrun's process group when there are several processes (or `always`, e.g. FSDP on one)."""
    rank, world, local = ddp_info()
    if (world > 1 or always) and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            device = f"cuda:{local}"
            torch.cuda.set_device(device)
    return rank, world, device


class Trainer:
    """Runs ``cfg.steps`` optimisation steps, checkpointing every ``cfg.ckpt_every`` and at the end.

    Under torchrun each process by default trains on its slice of every global batch with its own generator.
    With ``global_batch=True``, ``make_batch`` gets the step's global indices and, with ``loss_fn``, takes this
    process's rows itself (a `flexwm.training.distributed.Shard`), drawing randomness for the whole batch from a
    generator that is the same on every process: N processes then compute the single-process step.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, make_batch: Callable[[torch.Tensor], Any],
                 num_examples: int, cfg: TrainConfig, run_dir: str | Path, run_config: dict,
                 params: list[nn.Parameter] | None = None, progress: bool = True, global_batch: bool = False):
        self.cfg, self.run_dir, self.run_config = cfg, Path(run_dir), run_config
        self.fsdp = cfg.distributed == "fsdp"
        if self.fsdp:
            dist_mod.check_launch("fsdp")
        self.rank, self.world, self.device = ddp_setup(cfg.device, always=self.fsdp)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        if cfg.activation_checkpointing:
            dist_mod.enable_activation_checkpointing(model)
        trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        self.model = model.to(self.device)
        if self.fsdp:  # FSDP2 replaces the parameters by sharded ones: find the trainable ones again by name
            name_of = {id(p): n for n, p in model.named_parameters()}
            names = [name_of[id(p)] for p in trainable]
            dist_mod.shard_model(model, self.device, self.world, cfg.amp)
            named = dict(model.named_parameters())
            trainable = [named[n] for n in names]
        self.loss_fn, self.make_batch, self.progress = loss_fn, make_batch, progress
        self.params = trainable
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.global_batch = global_batch
        self.shard = dist_mod.Shard(self.rank, self.world)
        slicing = (0, 1) if global_batch else (self.rank, self.world)
        self.sampler = EpochSampler(num_examples, cfg.batch_size, cfg.seed, *slicing)
        self.generator = torch.Generator().manual_seed(cfg.seed * 7919 + 1 + slicing[0])
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.ema_decay > 0 else None
        self.step = 0
        self.net: nn.Module = model
        if self.world > 1 and not self.fsdp:
            ids = [self.device] if self.device.startswith("cuda") else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)

    # -- checkpoints -------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the run's latest checkpoint if there is one. Returns whether it resumed."""
        latest = find_latest(self.run_dir)
        if latest is None:
            return False
        if self.fsdp:
            return self._resume_sharded(latest)
        if dist_mod.is_sharded_checkpoint(latest):
            raise CheckpointError(f"{latest} was written by an FSDP run (sharded training state); resume it with "
                                  "torchrun and --set train.distributed=fsdp (any number of processes)")
        ck = load_checkpoint(latest)
        self.model.load_state_dict(ck.get("raw_model", ck["model"]))
        if self.ema is not None:
            self.ema = {k: v.to(self.device) for k, v in ck["model"].items()}
        if "optimizer" in ck:
            self.optimizer.load_state_dict(ck["optimizer"])
        st = ck.get("state", {})
        self.step = int(st.get("step", 0))
        if "scheduler" in st:
            self.scheduler.load_state_dict(st["scheduler"])
        if "sampler" in st:
            self.sampler.load_state_dict(st["sampler"])
        if "rng" in ck:
            restore_rng(ck["rng"], st.get("rng_meta", {}), {"train": self.generator})
        return True

    def _resume_sharded(self, latest: Path) -> bool:
        refuse_pickles(latest)
        try:
            st = json.loads((latest / "training_state" / "state.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {latest} is damaged or incomplete ({e}); use an earlier checkpoint "
                                  "under checkpoints/ or retrain") from e
        if "sharded" not in st:
            raise CheckpointError(f"{latest} was not written by an FSDP run; resume it without "
                                  "train.distributed=fsdp, or start a new --out")
        rng, rng_meta = dist_mod.load_sharded(latest / "training_state", self.rank, self.model, self.ema,
                                              self.optimizer, st["sharded"])
        self.step = int(st["step"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.sampler.load_state_dict(st["sampler"])
        restore_rng(rng, rng_meta, {"train": self.generator})
        return True

    def published_state(self) -> dict[str, torch.Tensor]:
        return self.ema if self.ema is not None else self.model.state_dict()

    def _save_sharded(self) -> Path | None:
        """Every process writes its shards into a staging directory; rank 0 then gathers the published weights
        into model.safetensors and moves everything into place atomically (`save_checkpoint`)."""
        root = self.run_dir / "checkpoints"
        staging = root / f".tmp-step-{self.step:08d}-shards"  # swept by save_checkpoint when a run died here
        if self.rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
        dist_mod.barrier(self.world)
        rng, rng_meta = capture_rng({"train": self.generator})
        meta = dist_mod.save_sharded(staging, self.rank, self.model, self.ema, self.optimizer, rng, rng_meta)
        published = {}
        for k, v in self.published_state().items():  # gathered one tensor at a time; only rank 0 keeps them
            full = dist_mod.full_tensor(v)
            if self.rank == 0:
                published[k] = full.detach().cpu()
        dist_mod.barrier(self.world)
        path = None
        if self.rank == 0:
            path = save_checkpoint(
                self.run_dir, step=self.step, model_state=published, config=self.run_config,
                keep_last=self.cfg.keep_last, state_dir=staging,
                state={"scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                       "rank_world": [self.rank, self.world], "sharded": meta})
        dist_mod.barrier(self.world)
        return path

    def save(self) -> Path | None:
        if self.fsdp:
            return self._save_sharded()
        if self.rank != 0:
            return None
        rng, rng_meta = capture_rng({"train": self.generator})
        return save_checkpoint(
            self.run_dir, step=self.step, model_state=self.published_state(), config=self.run_config,
            raw_model_state=self.model.state_dict() if self.ema is not None else None,
            optimizer=self.optimizer.state_dict(), rng=rng, keep_last=self.cfg.keep_last,
            state={"scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                   "rng_meta": rng_meta, "rank_world": [self.rank, self.world]},
        )

    # -- the loop ----------------------------------------------------------------------------------------
    def train_step(self) -> tuple[float, dict]:
        self.net.train()
        batch = self.make_batch(self.sampler.next_indices())
        autocast = self.cfg.amp == "bf16" and not self.fsdp  # FSDP's MixedPrecisionPolicy casts instead
        amp = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=autocast)
        with amp:
            loss, metrics = self.loss_fn(self.net, batch, self.generator)
        if not torch.isfinite(loss):
            raise FlexWMError(f"non-finite loss {loss.item()} at step {self.step}; metrics {metrics}. Check the "
                              "data for NaN/inf (flexwm data verify), or lower the learning rate.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip if self.cfg.grad_clip > 0 else 1e12)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                d = self.cfg.ema_decay
                for k, v in self.model.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].lerp_(v.detach(), 1 - d)
                    else:
                        self.ema[k].copy_(v)
        self.step += 1
        value = loss.detach()
        if self.world > 1:  # the loss of the global batch (each process's loss is its share of it)
            value = self.shard.all_sum(value) / self.world
        gnorm = dist_mod.full_tensor(gnorm)
        return float(value), {k: float(v) for k, v in metrics.items()} | {"grad_norm": float(gnorm)}

    def fit(self, logger: MetricsLogger | None = None, on_step: Callable | None = None,
            until: int | None = None) -> list[float]:
        """Train to ``cfg.steps`` (or stop early at step ``until``, checkpointing there). Returns the losses."""
        end = self.cfg.steps if until is None else min(until, self.cfg.steps)
        losses: list[float] = []
        bar = progress_bar(self.cfg.steps, "train", enabled=self.progress and self.rank == 0 and self.step < end,
                           unit="step", initial=self.step)
        t0 = time.perf_counter()
        while self.step < end:
            loss, metrics = self.train_step()
            losses.append(loss)
            if logger is not None and self.rank == 0 and (self.step % self.cfg.log_every == 0 or
                                                          self.step == self.cfg.steps):
                elapsed = time.perf_counter() - t0
                logger.log(self.step, **{**metrics, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                           "samples_per_s": len(losses) * self.cfg.batch_size / max(elapsed, 1e-9)})
            if on_step is not None:
                on_step(self.step, loss, metrics)
            if self.step % self.cfg.ckpt_every == 0 or self.step == end:
                self.save()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.close()
        return losses
