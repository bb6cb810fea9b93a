"""The noise-steered WAM (`wam-steered`): the WAM mode with its initial action noise drawn from a learned
noise policy, mu(context latents) + std * N(0, I), instead of N(0, I). With mu = 0 and std = 1 it is exactly
the WAM. The noise policy is trained by RL (`flexwm steer-wam`, `flexwm.rl.noise_rl`). Any world model with the
"noise" capability (`wm.propose(noise=...)`) can be steered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flexwm.errors import ConfigError
from flexwm.models.interface import LatentState, WorldModel, require
from flexwm.planning.base import Plan, RecedingHorizonPolicy, WMPlanner, to_numpy

__all__ = ["NoisePolicy", "SteeredWAMPlanner", "make_noise_policy", "steered_actions", "steered_wam_policy"]


class NoisePolicy(nn.Module):
    """mu(context latents (N, C, c, h, w)) -> mean initial action noise (N, H, A); starts at exactly zero."""

    def __init__(self, context_shape: tuple[int, ...], horizon: int, action_dim: int, hidden: int = 256):
        super().__init__()
        self.config = {"context_shape": [int(s) for s in context_shape], "horizon": int(horizon),
                       "action_dim": int(action_dim), "hidden": int(hidden)}
        n_in = int(np.prod(context_shape))
        self.net = nn.Sequential(nn.Flatten(), nn.LayerNorm(n_in, elementwise_affine=False), nn.Linear(n_in, hidden),
                                 nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, horizon * action_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, context: Tensor) -> Tensor:
        shape = tuple(self.config["context_shape"])
        if tuple(context.shape[1:]) != shape:
            raise ConfigError(f"the noise policy was built for context latents {shape}, got {tuple(context.shape[1:])}"
                              "; train it with the same world model")
        return self.net(context.float()).reshape(-1, self.config["horizon"], self.config["action_dim"])

    def save_pretrained(self, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
        from flexwm.io import save_pretrained_dir

        save_pretrained_dir(Path(directory), self.state_dict(), {"noise_policy": self.config, **(extra or {})})

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> NoisePolicy:
        from flexwm.io import check_state_dict, load_pretrained_dir

        cfg, state = load_pretrained_dir(Path(directory), "noise-policy")
        if "noise_policy" not in cfg:
            raise ConfigError(f"{directory} is not a noise-policy directory (config.json has no 'noise_policy')")
        c = cfg["noise_policy"]
        pol = cls(tuple(c["context_shape"]), c["horizon"], c["action_dim"], c["hidden"])
        check_state_dict(pol.state_dict(), state, Path(directory) / "model.safetensors", "noise-policy")
        pol.load_state_dict(state)
        return pol.eval()


def steered_actions(wm: WorldModel, context: Tensor, instruction: str | None, noise_actions: Tensor,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """WAM (actions (N, H, A) native, imagined latents (N, F, c, h, w)) from context latents (N, C, c, h, w) and
    initial action noise (N, H, A); the video noise is drawn from `generator`."""
    F = int(wm.horizon) // int(wm.frame_stride)
    video = torch.randn((context.shape[0], F, *context.shape[2:]), generator=generator).to(context)
    state = LatentState(context=context, proprio=None, embodiment=wm.embodiment)
    with torch.no_grad():
        actions, latents = wm.propose(state, instruction, 1,
                                      noise={"video": video[:, None], "actions": noise_actions.to(context)[:, None]})
    return actions[:, 0], latents[:, 0]


class SteeredWAMPlanner(WMPlanner):
    """The WAM with its initial action noise from a noise policy (mu + std * N(0, I)); no proprioception.
    With `record` it keeps (context, noise) of every plan for training."""

    name = "wam-steered"

    def __init__(self, wm: WorldModel, policy: NoisePolicy, std: float = 1.0, record: bool = False):
        super().__init__(wm, chunks=1)
        require(wm, "noise", "steering the WAM noise", "another policy")
        self.policy, self.std, self.record = policy, float(std), record
        self.records: list[tuple[Tensor, Tensor]] = []

    def _plan(self, frames: np.ndarray, proprio: np.ndarray | None, instruction: str,
              generator: torch.Generator, executed: int) -> Plan:
        ctx = self.encode(frames, None).context
        with torch.no_grad():
            z = self.policy(ctx) + self.std * torch.randn((1, self.horizon, self.action_dim), generator=generator)
        actions, video = steered_actions(self.wm, ctx, instruction or None, z, generator)
        if self.record:
            self.records.append((ctx[0].cpu(), z[0].cpu()))
        return Plan(actions=to_numpy(actions[0]), latents=video[0].cpu(), info={"noise_norm": float(z.norm())})


def steered_wam_policy(wm: WorldModel, policy: NoisePolicy, std: float = 1.0, *, execute: int | None = None,
                       record: bool = False, action_low: Any = None, action_high: Any = None
                       ) -> RecedingHorizonPolicy:
    """A policy for `evaluate_policy` and the simulator loop: the noise-steered WAM, receding horizon (actions
    clipped to [action_low, action_high], default [-1, 1])."""
    return RecedingHorizonPolicy(SteeredWAMPlanner(wm, policy, std, record), execute=execute,
                                 action_low=action_low, action_high=action_high, name="wam-steered")


def make_noise_policy(wm: WorldModel, hidden: int = 256) -> NoisePolicy:
    require(wm, "noise", "steering the WAM noise", "another policy")
    return NoisePolicy((int(wm.context_frames), *wm.latent_shape), int(wm.horizon), int(wm.action_dim), hidden)
