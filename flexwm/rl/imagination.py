"""N imagined episodes stepped together: the batched core under `WorldModelEnv`, `WorldModelVecEnv` and
closed-loop policy evaluation.

Each row holds a bounded window of the last C + F latents (C context frames, F = horizon // frame_stride
future frames of one model chunk), so memory and compute per step are constant however long the episode.
A step takes native actions (N, T, A) with T a multiple of `frame_stride` and asks the world model for the
T // frame_stride next latents in one batched `rollout`; the success/value head then scores the window
(context = the C oldest latents, future = the F newest), i.e. "has the task succeeded by the newest frame".

Randomness: every row has its own CPU `torch.Generator`; a step draws each row's initial flow noise from its
own generator and passes it to `rollout(noise=)`, so row i of a batch of N is the same as a batch of one
seeded alike (up to float rounding of batched matrix products).
Proprio is never passed: the model is trained with proprio dropped (`proprio_drop`) and imagined states
have none, so the first imagined frame is conditioned the same way as every later one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexwm.errors import EnvError
from flexwm.models.interface import LatentState, WorldModel
from flexwm.planning.base import check_action_dim


def check_frames(wm: WorldModel, frames: Any, what: str = "start frames") -> np.ndarray:
    """uint8 frames (..., H, W, 3) of the size the world model expects, else EnvError naming that size."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim < 3 or arr.shape[-1] != 3:
        raise EnvError(f"{what} must be uint8 RGB images (..., H, W, 3), got dtype {arr.dtype} and shape "
                       f"{arr.shape}")
    want = wm.image_size
    if want is not None and tuple(arr.shape[-3:-1]) != want:
        raise EnvError(f"{what} are {arr.shape[-3]}x{arr.shape[-2]} but the world model expects {want[0]}x"
                       f"{want[1]} frames (H x W); resize them or collect the data at image_size={want}")
    return arr


def the_model(wm: WorldModel) -> str:
    """How errors name the world model."""
    return f"the world model (embodiment {wm.embodiment!r})"


def check_env(wm: WorldModel, env: Any) -> None:
    """EnvError unless the simulator `env` (a RobotEnv) acts with the world model's action dim and renders
    frames of the size the model encodes."""
    where = f"simulator {env.embodiment}/{env.task}"
    check_action_dim(env.action_space.shape[0], wm.action_dim, where, the_model(wm), EnvError)
    want = wm.image_size
    if want is not None and tuple(env.image_size) != tuple(want):
        raise EnvError(f"{where} renders {tuple(env.image_size)} frames but the world model expects {tuple(want)}; "
                       f"make the env with image_size={tuple(want)}")


class Imagination:
    """A batch of `n` imagined episodes of one world model."""

    def __init__(self, wm: WorldModel, n: int):
        if n < 1:
            raise EnvError(f"need at least one imagined environment, got n={n}")
        self.wm, self.n = wm, int(n)
        self.stride = int(wm.frame_stride)
        self.future_frames = int(wm.horizon) // self.stride
        self.generators = [torch.Generator() for _ in range(self.n)]
        self.instructions: list[str | None] = [None] * self.n
        self.window: Tensor | None = None  # (n, C + F, c, h, w) oldest first
        self.context_frames = 0
        self.success = torch.zeros(self.n)  # P(success by the newest frame), (n,) float on the CPU
        self.progress = torch.zeros(self.n)

    def seed(self, rows: Sequence[int], seeds: Sequence[int]) -> None:
        for r, s in zip(rows, seeds):
            self.generators[r].manual_seed(int(s))

    @property
    def context(self) -> Tensor:
        """(n, C, c, h, w): what the next model call is conditioned on (the observation in latent mode)."""
        self._check_started()
        return self.window[:, self.window.shape[1] - self.context_frames:]

    def _check_started(self) -> None:
        if self.window is None:
            raise EnvError("the imagined environments were never reset; call reset() first")

    @torch.no_grad()
    def start(self, rows: Sequence[int], frames: Any, instructions: Sequence[str | None]) -> None:
        """Start `rows` from real uint8 frames (len(rows), H, W, 3) or (len(rows), T, H, W, 3), oldest first."""
        rows = list(rows)
        frames = check_frames(self.wm, frames)
        if frames.shape[0] != len(rows) or frames.ndim not in (4, 5):
            raise EnvError(f"need start frames (N, H, W, 3) or (N, T, H, W, 3) for {len(rows)} environments, "
                           f"got shape {frames.shape}")
        ctx = self.wm.encode(frames).context  # (k, C, c, h, w); fewer than C frames: the oldest repeated
        C, F = ctx.shape[1], self.future_frames
        win = torch.cat([ctx[:, :1].expand(-1, F, *ctx.shape[2:]), ctx], 1)
        if self.window is None:
            self.context_frames = C
            self.window = win.new_zeros(self.n, *win.shape[1:])
        self.window[rows] = win
        for r, ins in zip(rows, instructions):
            self.instructions[r] = ins or None
        self._score(rows)

    @torch.no_grad()
    def step(self, actions: Any) -> Tensor:
        """Native actions (n, T, A), T a multiple of frame_stride -> the T // frame_stride new latents."""
        self._check_started()
        win = self.window
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        if a.dim() != 3 or a.shape[0] != self.n or a.shape[2] != self.wm.action_dim or a.shape[1] % self.stride:
            raise EnvError(f"imagination needs actions (n={self.n}, T, A={self.wm.action_dim}) with T a multiple of "
                           f"frame_stride={self.stride}, got {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise EnvError("got non-finite actions; check the policy output for NaN/inf")
        T = a.shape[1]
        n_chunks = -(-T // int(self.wm.horizon))
        shape = (n_chunks, self.future_frames, *win.shape[2:])
        noise = torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(win)
        state = LatentState(context=self.context, proprio=None, embodiment=self.wm.embodiment)
        new = self.wm.rollout(state, a.to(win), noise=noise)
        self.window = torch.cat([win, new], 1)[:, -win.shape[1]:]
        self._score(range(self.n))
        return new

    def _score(self, rows: Sequence[int]) -> None:
        """Success probability and progress of each row's window, one model call per distinct instruction."""
        rows = list(rows)
        C = self.window.shape[1] - self.future_frames
        groups: dict[str | None, list[int]] = {}
        for r in rows:
            groups.setdefault(self.instructions[r], []).append(r)
        for ins, idx in groups.items():
            w = self.window[idx]
            state = LatentState(context=w[:, :C], proprio=None, embodiment=self.wm.embodiment)
            p, prog = self._score_group(idx, state, w[:, C:], ins)
            self.success[idx] = p.float().cpu()
            self.progress[idx] = prog.float().cpu()

    def _score_group(self, rows: list[int], state: LatentState, future: Tensor,
                     instruction: str | None) -> tuple[Tensor, Tensor]:
        """The head on one instruction's rows (a subclass may record more, e.g. the head's input features)."""
        return self.wm.score(state, future, instruction)

    @torch.no_grad()
    def images(self) -> np.ndarray:
        """The newest imagined frame of every row, decoded: uint8 (n, H, W, 3)."""
        self._check_started()
        return np.asarray(self.wm.decode(self.window[:, -1]).cpu())
