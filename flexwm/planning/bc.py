"""A behaviour-cloning baseline: no world model, a direct map observation -> action chunk.

    frame (H, W, 3) -> small conv encoder --\
    proprio (P,)   -> linear (normalised) ---+-> MLP -> H actions (normalised to [-1, 1] by dataset min/max)
    instruction    -> frozen text encoder ---/

Trained with MSE on the success episodes of FlexDatasets (steps past an episode's end are masked), optionally
under the task's training paraphrases (as the world model is), with small random-shift augmentation. The
presets are sized like the world-model presets of the same name, so "BC vs world model" compares models of
similar size. Saved as model.safetensors + config.json.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexwm.config import field, from_dict, to_dict, validate
from flexwm.errors import ConfigError, DatasetError
from flexwm.io import check_state_dict, load_pretrained_dir, save_pretrained_dir
from flexwm.planning.base import Plan, Planner


@dataclass
class BCConfig:
    image_size: tuple[int, int] = field((64, 64), help="(H, W) of the camera frames")
    action_dim: int = field(4, ge=1)
    proprio_dim: int = field(4, ge=0)
    horizon: int = field(8, ge=1, help="actions predicted per chunk")
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256], help="conv widths, each halves H, W")
    hidden: int = field(512, ge=8)
    text_dim: int = field(384, ge=1)
    text_encoder: str = field("minilm", choices=("minilm", "hash"), help="the frozen encoder it was trained with")

    def __post_init__(self) -> None:
        validate(self)
        down = 2 ** len(self.channels)
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"config key 'channels' = {self.channels} needs at least one positive width")
        if self.image_size[0] % down or self.image_size[1] % down:
            raise ConfigError(f"config key 'image_size' = {self.image_size} must be a multiple of {down} "
                              f"(2 ** len(channels))")


@dataclass
class BCPolicyConfig:
    execute: int | None = field(None, ge=1, help="actions executed before predicting again; None = half a chunk")
    ensemble: float | None = field(None, ge=0.0, help="temporal ensembling: predict every step and execute the "
                                                      "exp(-ensemble * i)-weighted mean of the overlapping chunks "
                                                      "(i = 0 oldest); None = off")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=[8, 16], hidden=64, horizon=4, text_encoder="hash"),
    "cpu": dict(channels=[32, 64, 128, 256], hidden=512, horizon=8),
    "gpu": dict(channels=[64, 128, 256, 512], hidden=1024, horizon=16),
}


def preset(name: str, **overrides: Any) -> BCConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown BC preset {name!r}; choose one of {list(PRESETS)}")
    return from_dict(BCConfig, {**PRESETS[name], **overrides})


class BCModel(nn.Module):
    def __init__(self, cfg: BCConfig):
        super().__init__()
        self.cfg = cfg
        layers, prev = [], 3
        for c in cfg.channels:
            layers += [nn.Conv2d(prev, c, 4, stride=2, padding=1), nn.GroupNorm(math.gcd(8, c), c), nn.SiLU()]
            prev = c
        self.conv = nn.Sequential(*layers)
        down = 2 ** len(cfg.channels)
        h, w, d = cfg.image_size[0] // down, cfg.image_size[1] // down, cfg.hidden
        self.image_proj = nn.Linear(prev * h * w, d)
        self.proprio_proj = nn.Linear(max(cfg.proprio_dim, 1), d)
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(3 * d, d), nn.SiLU(), nn.Linear(d, d), nn.SiLU(),
                                 nn.Linear(d, cfg.horizon * cfg.action_dim))
        self.register_buffer("action_low", -torch.ones(cfg.action_dim))
        self.register_buffer("action_high", torch.ones(cfg.action_dim))
        self.register_buffer("proprio_mean", torch.zeros(max(cfg.proprio_dim, 1)))
        self.register_buffer("proprio_std", torch.ones(max(cfg.proprio_dim, 1)))

    def forward(self, frames: Tensor, proprio: Tensor | None, text: Tensor) -> Tensor:
        """frames uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1] -> normalised actions (B, H, A)."""
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1 if frames.dtype == torch.uint8 else frames
        if tuple(x.shape[-2:]) != tuple(self.cfg.image_size):
            raise ConfigError(f"BC model expects {self.cfg.image_size[0]}x{self.cfg.image_size[1]} frames, got "
                              f"{x.shape[-2]}x{x.shape[-1]}")
        B = x.shape[0]
        img = self.image_proj(self.conv(x.to(self.action_low.dtype)).flatten(1))
        if proprio is None or self.cfg.proprio_dim == 0:
            proprio = torch.zeros(B, self.proprio_mean.shape[0], device=x.device)
        p = self.proprio_proj((proprio.to(img) - self.proprio_mean) / self.proprio_std)
        out = self.mlp(torch.cat([img, p, self.text_proj(text.to(img))], -1))
        return out.reshape(B, self.cfg.horizon, self.cfg.action_dim)

    def predict(self, frames: Tensor, proprio: Tensor | None, text: Tensor) -> Tensor:
        """Native-unit actions (B, H, A)."""
        u = self.forward(frames, proprio, text).clamp(-1, 1)
        return (u + 1) / 2 * (self.action_high - self.action_low) + self.action_low

    def save_pretrained(self, directory: str | Path) -> None:
        save_pretrained_dir(Path(directory), self.state_dict(), to_dict(self.cfg))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> BCModel:
        data, state = load_pretrained_dir(Path(directory), "BC")
        model = cls(from_dict(BCConfig, data))
        check_state_dict(model.state_dict(), state, Path(directory) / "model.safetensors", "BC")
        model.load_state_dict(state)
        return model.to(device).eval()


# ---- training --------------------------------------------------------------------------------------------


def _success_episodes(data: Any, episodes: Sequence[int] | None) -> list[Any]:
    from flexwm.data import FlexDataset

    if isinstance(data, (str, Path)):
        data = FlexDataset(data)
    if isinstance(data, FlexDataset):
        idx = range(len(data)) if episodes is None else episodes
        return [data.load_episode(i) for i in idx if data.episodes[i]["outcome"] == "success"]
    return [ep for ep in data if ep.meta.outcome == "success"]


def _instructions(ep: Any, paraphrase_prob: float) -> list[str]:
    from flexwm.envs.instructions import paraphrases
    from flexwm.errors import EnvError

    out = [ep.meta.instruction]
    if paraphrase_prob > 0:
        try:
            out += [p for p in paraphrases(ep.meta.task, "train") if p != ep.meta.instruction]
        except EnvError:
            pass
    return out


def train_bc(data: Any, cfg: BCConfig | str = "cpu", *, text_encoder: Any = None, episodes: Sequence[int] | None = None,
             steps: int = 2000, batch_size: int = 64, lr: float = 3e-4, weight_decay: float = 1e-4,
             paraphrase_prob: float = 0.5, augment: int = 4, seed: int = 0, device: str | torch.device = "cpu",
             progress: bool = False, use_proprio: bool = True,
             on_step: Any = None, tensorboard: Any = None, log_every: int = 10) -> tuple[BCModel, dict[str, Any]]:
    """Fit a BC model to the success episodes of `data` (a FlexDataset, its path, or a list of Episodes;
    `episodes` picks dataset indices, e.g. the world model's training split). Image size, action and proprio
    dims come from the data; `use_proprio=False` gives an image-and-instruction-only policy (one that can act
    on imagined frames, which carry no proprioception). `on_step(step, model)` is called after every optimizer
    step (1-based), e.g. to save snapshots of graded quality. `tensorboard` (a flexwm.metrics.TensorBoardLog)
    receives the mean loss of every `log_every` steps and the learning rate. Returns (model in eval mode,
    {"losses": per-step MSE, "samples", "parameters"})."""
    cfg = preset(cfg) if isinstance(cfg, str) else cfg
    eps = _success_episodes(data, episodes)
    if not eps:
        raise DatasetError("train_bc found no success episodes; collect expert data (flexwm collect --source expert)")
    frames = np.concatenate([e.frames for e in eps])
    cfg = dataclasses.replace(cfg, image_size=tuple(frames.shape[1:3]), action_dim=int(eps[0].actions.shape[1]),
                              proprio_dim=int(eps[0].proprio.shape[1]) if use_proprio else 0)
    if text_encoder is None:
        from flexwm.models.text import make_text_encoder

        text_encoder = make_text_encoder(cfg.text_encoder)
    H = cfg.horizon
    acts, valid, cands = [], [], []
    strings: dict[str, int] = {}
    for e in eps:
        T = e.length
        idx = np.minimum(np.arange(T)[:, None] + np.arange(H)[None], T - 1)
        acts.append(e.actions[idx])
        valid.append(np.arange(T)[:, None] + np.arange(H)[None] < T)
        ids = [strings.setdefault(s, len(strings)) for s in _instructions(e, paraphrase_prob)]
        cands += [ids] * T
    all_actions = np.concatenate([e.actions for e in eps])
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BCModel(cfg)
    low, high = all_actions.min(0), all_actions.max(0)
    model.action_low.copy_(torch.as_tensor(low))
    model.action_high.copy_(torch.as_tensor(np.maximum(high, low + 1e-6)))
    if cfg.proprio_dim:
        prop = np.concatenate([e.proprio for e in eps])
        model.proprio_mean.copy_(torch.as_tensor(prop.mean(0)))
        model.proprio_std.copy_(torch.as_tensor(prop.std(0)).clamp_min(1e-6))
    model.to(device).train()
    frames_t, proprio_t = torch.from_numpy(frames), torch.from_numpy(np.concatenate([e.proprio for e in eps]))
    target = 2 * (torch.from_numpy(np.concatenate(acts)) - model.action_low.cpu()) / (
        model.action_high.cpu() - model.action_low.cpu()) - 1
    valid_t = torch.from_numpy(np.concatenate(valid))
    text_table = torch.as_tensor(text_encoder.embed(list(strings)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses, N = [], len(frames_t)
    bar = None
    if progress:
        from flexwm.metrics import progress_bar

        bar = progress_bar(steps, "train-bc", unit="step")
    for step in range(1, steps + 1):
        i = torch.randint(0, N, (batch_size,), generator=gen)
        x = frames_t[i].permute(0, 3, 1, 2).float() / 127.5 - 1
        if augment > 0:  # random shift (DrQ): pad by replication, crop back
            x = _random_shift(x, augment, gen)
        use_para = torch.rand(batch_size, generator=gen) < paraphrase_prob
        t_rows = [c[int(torch.randint(0, len(c), (1,), generator=gen))] if u and len(c) > 1 else c[0]
                  for c, u in zip((cands[int(k)] for k in i), use_para.tolist())]
        pred = model(x.to(device), proprio_t[i].to(device), text_table[t_rows].to(device))
        err = (pred - target[i].to(device)).pow(2).mean(-1)
        m = valid_t[i].to(device).float()
        loss = (err * m).sum() / m.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, model)
        if tensorboard is not None and (step % log_every == 0 or step == steps):
            recent = losses[-(step - 1) % log_every - 1:]
            tensorboard.log(step, loss=sum(recent) / len(recent), lr=lr)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return model.eval(), {"losses": losses, "samples": N, "episodes": len(eps),
                          "parameters": sum(p.numel() for p in model.parameters())}


def _random_shift(x: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    B, _, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, B), generator=gen).tolist()
    return torch.stack([padded[b, :, dy[b]:dy[b] + H, dx[b]:dx[b] + W] for b in range(B)])


class BCPlanner(Planner):
    name = "bc"

    def __init__(self, model: BCModel, text_encoder: Any = None):
        if text_encoder is None:
            from flexwm.models.text import make_text_encoder

            text_encoder = make_text_encoder(model.cfg.text_encoder)
        self.model, self.text_encoder = model.eval(), text_encoder
        self.horizon, self.action_dim = model.cfg.horizon, model.cfg.action_dim

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        dev = self.model.action_low.device
        frame = torch.as_tensor(frames[-1:]).to(dev)
        p = None if proprio is None else torch.as_tensor(proprio).reshape(1, -1).to(dev)
        text = torch.as_tensor(self.text_encoder.embed([instruction])).to(dev)
        with torch.no_grad():
            actions = self.model.predict(frame, p, text)[0]
        return Plan(actions=actions.float().cpu().numpy())


def train_bc_run(data: str | Path, out: str | Path, preset_name: str = "cpu", *, steps: int = 4000,
                 batch_size: int = 32, lr: float = 3e-4, heldout_every: int = 10, max_demos: int | None = None,
                 seed: int = 0, use_proprio: bool = True, save_at: Sequence[int] = (), device: str = "cpu",
                 progress: bool = False, command: list[str] | None = None,
                 tensorboard: bool | str | Path | None = None) -> dict[str, Any]:
    """`flexwm train-bc`: fit the BC baseline on the success episodes of dataset `data` (every `heldout_every`-th
    episode skipped, as `flexwm train` holds them out; 0: use all; only the first `max_demos` if given) and save
    it to `out` with OUT/train_info.json, plus OUT/step-N snapshots at the steps in `save_at`. `tensorboard` (off
    by default): the loss curve as TensorBoard event files in OUT/tensorboard/ (True) or the given directory.
    Returns a summary."""
    import time

    from flexwm.config import check_device
    from flexwm.data import FlexDataset
    from flexwm.io import atomic_write_json
    from flexwm.metrics import check_tensorboard, tensorboard_log

    out = Path(out)
    check_device(device)
    if tensorboard not in (None, False):
        check_tensorboard()
    if (out / "model.safetensors").exists():
        raise ConfigError(f"{out} already holds a BC model; choose another --out or remove it")
    snapshots = sorted({int(k) for k in save_at})
    if any(not 1 <= k <= steps for k in snapshots):
        raise ConfigError(f"--save-at steps {snapshots} must lie between 1 and --steps {steps}")
    ds = FlexDataset(data)
    idx = [i for i in range(len(ds)) if heldout_every < 2 or i % heldout_every != heldout_every - 1]
    idx = [i for i in idx if ds.episodes[i]["outcome"] == "success"]
    if max_demos is not None:
        idx = idx[:max_demos]

    def on_step(step: int, model: BCModel) -> None:
        if step in snapshots:
            model.eval()
            model.save_pretrained(out / f"step-{step:06d}")
            model.train()

    start = time.perf_counter()
    tb = tensorboard_log(tensorboard, out)
    try:
        model, info = train_bc(ds, preset_name, episodes=idx, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                               device=device, progress=progress, use_proprio=use_proprio,
                               on_step=on_step if snapshots else None, tensorboard=tb)
    finally:
        if tb is not None:
            tb.close()
    model.save_pretrained(out)
    losses = info.pop("losses")
    first, last = losses[:50], losses[-50:]
    summary = {"out": str(out), "episodes": info["episodes"], "parameters": info["parameters"],
               "loss_last_50": float(sum(last) / max(1, len(last)))}
    atomic_write_json(out / "train_info.json", {
        **info, "data": str(data), "preset": preset_name, "steps": steps, "batch_size": batch_size, "lr": lr,
        "seed": seed, "use_proprio": use_proprio, "train_episodes": idx, "wall_s": time.perf_counter() - start,
        "loss_first_50": float(sum(first) / max(1, len(first))), "loss_last_50": summary["loss_last_50"],
        "snapshots": [f"step-{k:06d}" for k in snapshots], "losses": losses[::10], "command": " ".join(command or [])})
    return summary
