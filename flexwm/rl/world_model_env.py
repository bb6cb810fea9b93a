"""The world model as a gymnasium environment: learning and evaluating policies in imagination.

    env = WorldModelEnv(wm, start=dataset, config=WorldModelEnvConfig(horizon=50))   # or start=make_env(...)
    vec = WorldModelVecEnv(wm, start=dataset, num_envs=16)   # one batched model call steps all 16
    obs, info = env.reset(seed=0); obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    env = gymnasium.make("flexwm/WorldModel-v0", ckpt="runs/mw", env="metaworld", task="door-open-v3", horizon=50)

The id "flexwm/WorldModel-v0" (`make_world_model_env`) is registered by `import flexwm.rl`, and by `import flexwm`
when gymnasium is already imported; `gymnasium.make("flexwm.rl:flexwm/WorldModel-v0", ...)` always finds it.

Episodes start from real frames: the first frame of a dataset episode, of a live simulator reset, or frames
passed as `reset(options={"frames": ...})`. Then every step is imagined by the action-conditioned mode.

Step granularity. The model predicts one latent frame per `frame_stride` native actions, so one env step
imagines `frames_per_step` frames from `frames_per_step * frame_stride` native actions in one model call.
`action_mode="repeat"` (default): the action is one native action held for all of them (action repeat, as
in DreamerV3 / DrQ): a small action space PPO learns in, every step gets a fresh observation and reward, and
the chunk padding inside `rollout` (the last action repeated) agrees with the held action. The policy then
runs at frame_stride x coarser control than the simulator; deploy it with the same repeat.
`action_mode="chunk"`: the action is the flattened (T*A,) sequence of native actions, full control rate but
open loop within a step and a T x larger action space. (Buffering one native action per step and imagining
every frame_stride-th step was rejected: observation and reward would change only every frame_stride steps,
so the problem is not Markov for the policy without a phase input.) With frames_per_step < horizon //
frame_stride, `rollout` pads each model chunk with the last action (the model sees H actions per call);
frames_per_step = horizon // frame_stride imagines whole chunks exactly as trained, at a coarser step.
Closed-loop evaluation of per-step policies is in flexwm.evaluation.policy_eval.

Observation: `obs_mode="latent"` the model context (C, c, h, w) float32 (Markov for the model); "image" the
newest imagined frame decoded to uint8 (H, W, 3). Proprio is not observed (imagined states have none).
Reward from the success head p_t (P(task done by the newest frame)): "success_delta" p_t - p_{t-1} (default;
potential-based, so terminating at success is not penalised), "success" p_t, "progress"/"progress_delta"
from the progress head, "sparse" 1 on predicted success. Terminated when p_t > success_threshold,
truncated after `horizon` steps (a time limit the observation does not show: algorithms bootstrap it).
Memory is constant: only a window of C + F latents is kept per env.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

import flexwm
from flexwm.config import field, from_dict, to_dict, validate
from flexwm.envs.base import RobotEnv
from flexwm.errors import ConfigError, EnvError
from flexwm.models.interface import WorldModel
from flexwm.planning.base import action_bounds, check_action_dim
from flexwm.rl.imagination import Imagination, check_env, check_frames, the_model

REWARDS = ("success_delta", "success", "progress", "progress_delta", "sparse")


@dataclass
class WorldModelEnvConfig:
    horizon: int = field(50, ge=1, help="env steps before truncation")
    obs_mode: str = field("latent", choices=("latent", "image"), help="model context latents or decoded frame")
    action_mode: str = field("repeat", choices=("repeat", "chunk"),
                             help="one native action held for the step, or the step's flattened native actions")
    frames_per_step: int = field(1, ge=1, help="latent frames imagined per step (frame_stride actions each)")
    normalize_actions: bool = field(True, help="action space [-1, 1], mapped linearly onto the native bounds")
    reward: str = field("success_delta", choices=REWARDS)
    success_threshold: float = field(0.5, ge=0.0, le=1.0, help="predicted success above it ends the episode")
    terminate_on_success: bool = field(True)
    instruction: str | None = field(None, help="instruction the success head scores; None: the start's own")

    def __post_init__(self) -> None:
        validate(self)


# ---------------------------------------------------------------------------------------------------------
# where episodes start


class StartSource(Protocol):
    def sample(self, rng: np.random.Generator, options: dict[str, Any]) -> tuple[np.ndarray, str | None]:
        """Real start frames uint8 (T, H, W, 3), oldest first, and the instruction (None: unknown)."""


class DatasetStarts:
    """First frames of a FlexDataset's episodes (optionally only `episodes`); options {"episode": i}."""

    def __init__(self, dataset: Any, wm: WorldModel, episodes: list[int] | None = None):
        want = wm.image_size
        if want is not None and tuple(dataset.image_size) != want:
            raise EnvError(f"dataset {dataset.root} has {dataset.image_size[0]}x{dataset.image_size[1]} frames but "
                           f"the world model expects {want[0]}x{want[1]}; use a dataset collected at image_size={want}")
        check_action_dim(dataset.action_dim, wm.action_dim, f"dataset {dataset.root}", the_model(wm), EnvError)
        self.dataset, self.episodes = dataset, list(range(len(dataset)) if episodes is None else episodes)
        if not self.episodes:
            raise EnvError(f"dataset {dataset.root} has no episodes to start from")
        self._first: dict[int, np.ndarray] = {}

    def sample(self, rng: np.random.Generator, options: dict[str, Any]) -> tuple[np.ndarray, str | None]:
        i = int(options["episode"]) if "episode" in options else self.episodes[int(rng.integers(len(self.episodes)))]
        if i not in self._first:
            self._first[i] = self.dataset.load_episode(i).frames[:1].copy()
        return self._first[i], self.dataset.episodes[i].get("instruction") or None


class SimulatorStarts:
    """Live resets of a RobotEnv; the simulator seed is drawn from the env's rng (or options {"sim_seed": s})."""

    def __init__(self, env: RobotEnv, wm: WorldModel):
        check_env(wm, env)
        self.env = env

    def sample(self, rng: np.random.Generator, options: dict[str, Any]) -> tuple[np.ndarray, str | None]:
        seed = int(options["sim_seed"]) if "sim_seed" in options else int(rng.integers(2**31 - 1))
        obs = self.env.reset(seed)
        return obs.image[None], obs.instruction or None


class FrameStarts:
    """A pool of start frames (K, H, W, 3) (or (K, T, H, W, 3)), one drawn per reset."""

    def __init__(self, frames: Any, wm: WorldModel, instruction: str | None = None):
        self.frames = check_frames(wm, frames)
        if self.frames.ndim == 4:
            self.frames = self.frames[:, None]
        if self.frames.ndim != 5 or not len(self.frames):
            raise EnvError(f"start frames must be (K, H, W, 3) or (K, T, H, W, 3), got {self.frames.shape}")
        self.instruction = instruction

    def sample(self, rng: np.random.Generator, options: dict[str, Any]) -> tuple[np.ndarray, str | None]:
        return self.frames[int(rng.integers(len(self.frames)))], self.instruction


def make_start_source(start: Any, wm: WorldModel) -> StartSource | None:
    from flexwm.data.reader import FlexDataset

    if start is None or hasattr(start, "sample"):
        return start
    if isinstance(start, FlexDataset):
        return DatasetStarts(start, wm)
    if isinstance(start, RobotEnv):
        return SimulatorStarts(start, wm)
    return FrameStarts(start, wm)


# ---------------------------------------------------------------------------------------------------------
# the shared per-row logic of the single and the vector env


class _Rows:
    def __init__(self, wm: WorldModel, n: int, start: Any, cfg: WorldModelEnvConfig,
                 action_low: Any = None, action_high: Any = None):
        self.wm, self.cfg, self.n = wm, cfg, n
        self.start = make_start_source(start, wm)
        self.imag = Imagination(wm, n)
        self.rngs: list[np.random.Generator | None] = [None] * n
        self.t, self.prev, self.done = np.zeros(n, np.int64), np.zeros(n), np.zeros(n, bool)
        A, self.T = int(wm.action_dim), cfg.frames_per_step * int(wm.frame_stride)
        low, high = self._bounds(action_low, action_high)
        self.low, self.high = low.astype(np.float32), high.astype(np.float32)
        shape = (A,) if cfg.action_mode == "repeat" else (self.T * A,)
        reps = shape[0] // A
        self.action_space = (spaces.Box(-1.0, 1.0, shape, np.float32) if cfg.normalize_actions
                             else spaces.Box(np.tile(self.low, reps), np.tile(self.high, reps), dtype=np.float32))
        self.observation_space = self._obs_space()

    def render_fps(self, fps: float | None) -> float:
        """Env steps per second: the native control rate (`fps`, else the start simulator's or dataset's, else
        10) over the native actions one step imagines."""
        if fps is None:
            if isinstance(self.start, SimulatorStarts):
                fps = self.start.env.fps
            elif isinstance(self.start, DatasetStarts):
                fps = self.start.dataset.fps
        return float(fps or 10) / self.T

    def _bounds(self, low: Any, high: Any) -> tuple[np.ndarray, np.ndarray]:
        A = int(self.wm.action_dim)
        if low is None:  # the simulator's action space, else the model's own action range
            space = self.start.env.action_space if isinstance(self.start, SimulatorStarts) else None
            low, high = action_bounds(self.wm, space)
        low, high = np.asarray(low, np.float64).reshape(-1), np.asarray(high, np.float64).reshape(-1)
        if low.shape != (A,) or high.shape != (A,) or not np.all(high > low):
            raise EnvError(f"action bounds must be {A} values each with high > low, got low {low} high {high}")
        return low, high

    def _obs_space(self) -> spaces.Space:
        if self.cfg.obs_mode == "image":
            size = self.wm.image_size
            if size is None:
                raise EnvError("obs_mode='image' needs a world model that reports its image size; use 'latent'")
            return spaces.Box(0, 255, (*size, 3), np.uint8)
        shape = (self.wm.context_frames, *self.wm.latent_shape)
        return spaces.Box(-np.inf, np.inf, tuple(int(s) for s in shape), np.float32)

    # -- reset / step ------------------------------------------------------------------------------------
    def reset(self, rows: list[int], seeds: list[int | None], options: list[dict[str, Any]]) -> None:
        frames, instructions = [], []
        for r, s, opt in zip(rows, seeds, options):
            if s is not None or self.rngs[r] is None:
                self.rngs[r] = seeding.np_random(s)[0]
                self.imag.seed([r], [int(self.rngs[r].integers(2**63 - 1))])
            if "frames" in opt:
                f, ins = np.asarray(opt["frames"]), None
                f = f[None] if f.ndim == 3 else f
            elif self.start is not None:
                f, ins = self.start.sample(self.rngs[r], opt)
            else:
                raise EnvError("no start frames: construct the env with start= (a FlexDataset, a RobotEnv or "
                               "frames) or pass reset(options={'frames': uint8 (H, W, 3)})")
            frames.append(check_frames(self.wm, f))
            instructions.append(opt.get("instruction", self.cfg.instruction or ins))
        T = max(len(f) for f in frames)  # left-pad shorter histories with their oldest frame
        frames = np.stack([np.concatenate([f[:1].repeat(T - len(f), 0), f]) for f in frames])
        self.imag.start(rows, frames, instructions)
        self.t[rows], self.done[rows] = 0, False
        self.prev[rows] = self._potential()[rows]

    def _potential(self) -> np.ndarray:
        use_progress = self.cfg.reward.startswith("progress")
        return (self.imag.progress if use_progress else self.imag.success).numpy().astype(np.float64)

    def native_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions, dtype=np.float32)
        shape = (self.n, *self.action_space.shape)
        if a.shape != shape:
            what = ("one native action, held for the step" if self.cfg.action_mode == "repeat"
                    else f"{self.T} native actions of {self.wm.action_dim} values, flattened")
            raise EnvError(f"the world-model env expects actions of shape {shape[1:]} per env ({what}; "
                           f"action_mode={self.cfg.action_mode!r}), got {a.shape[1:] if self.n == 1 else a.shape}")
        if not np.all(np.isfinite(a)):
            raise EnvError("got a non-finite action; check the policy output for NaN/inf")
        a = a.reshape(self.n, -1, int(self.wm.action_dim))
        if self.cfg.normalize_actions:
            a = self.low + (np.clip(a, -1.0, 1.0) + 1.0) / 2.0 * (self.high - self.low)
        a = np.clip(a, self.low, self.high)
        return np.repeat(a, self.T, axis=1) if a.shape[1] == 1 else a

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.imag.step(self.native_actions(actions))
        self.t += 1
        p = self.imag.success.numpy().astype(np.float64)
        success = p > self.cfg.success_threshold
        pot = self._potential()
        reward = {"success": p, "progress": pot, "sparse": success.astype(np.float64)}.get(
            self.cfg.reward, pot - self.prev)
        self.prev = pot
        terminated = success & self.cfg.terminate_on_success
        truncated = (self.t >= self.cfg.horizon) & ~terminated
        self.done = terminated | truncated
        return reward, terminated, truncated

    def obs(self) -> np.ndarray:
        if self.cfg.obs_mode == "image":
            return self.imag.images()
        return self.imag.context.float().cpu().numpy().copy()

    def info(self, r: int) -> dict[str, Any]:
        p = float(self.imag.success[r])
        return {"success_prob": p, "progress": float(self.imag.progress[r]), "t": int(self.t[r]),
                "is_success": bool(p > self.cfg.success_threshold)}


# ---------------------------------------------------------------------------------------------------------
# the environments


class WorldModelEnv(gym.Env):
    """One imagined environment (see the module docstring). `start`: FlexDataset, RobotEnv, frames or None.
    `fps`: the native control rate, for metadata["render_fps"] (default: the start simulator's or dataset's)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, wm: WorldModel, start: Any = None, config: WorldModelEnvConfig | None = None, *,
                 action_low: Any = None, action_high: Any = None, render_mode: str | None = None,
                 fps: float | None = None):
        self.config = config or WorldModelEnvConfig()
        self._rows = _Rows(wm, 1, start, self.config, action_low, action_high)
        self.action_space, self.observation_space = self._rows.action_space, self._rows.observation_space
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise EnvError(f"render_mode {render_mode!r} is not supported; use 'rgb_array' or None")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self._rows.render_fps(fps)}
        self._owned: list[Any] = []  # what close() closes (the simulator make_world_model_env built)

    @property
    def imagination(self) -> Imagination:
        return self._rows.imag

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._rows.reset([0], [seed], [dict(options or {})])
        self._np_random = self._rows.rngs[0]
        return self._rows.obs()[0], self._rows.info(0)

    def step(self, action: Any):
        if self._rows.done[0]:
            raise EnvError("the imagined episode is over (terminated or truncated); call reset() first")
        reward, terminated, truncated = self._rows.step(np.asarray(action)[None])
        return (self._rows.obs()[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                self._rows.info(0))

    def render(self) -> np.ndarray:
        return self._rows.imag.images()[0]

    def close(self) -> None:
        while self._owned:
            self._owned.pop().close()


class WorldModelVecEnv(VectorEnv):
    """`num_envs` imagined environments stepped by one batched model call; same-step autoreset.

    reset(seed=s) seeds env i with s + i, so env i follows exactly `WorldModelEnv.reset(seed=s + i)` given the
    same actions. reset(options={"frames": (N, H, W, 3)}) starts env i from frames[i]. When an env ends, its
    last observation and info are in infos["final_obs"] / infos["final_info"] and it is reset at once.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, wm: WorldModel, start: Any = None, num_envs: int = 8,
                 config: WorldModelEnvConfig | None = None, *, action_low: Any = None, action_high: Any = None,
                 fps: float | None = None):
        self.config = config or WorldModelEnvConfig()
        self.num_envs = int(num_envs)
        self._rows = _Rows(wm, self.num_envs, start, self.config, action_low, action_high)
        self.metadata = {**self.metadata, "render_fps": self._rows.render_fps(fps)}
        self.single_action_space = self._rows.action_space
        self.single_observation_space = self._rows.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)

    @property
    def imagination(self) -> Imagination:
        return self._rows.imag

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        n = self.num_envs
        seeds = [seed + i for i in range(n)] if isinstance(seed, int) else list(seed or [None] * n)
        opts = dict(options or {})
        per_row = [dict(opts) for _ in range(n)]
        if "frames" in opts:
            frames = np.asarray(opts["frames"])
            if len(frames) != n:
                raise EnvError(f"options['frames'] must hold one start per env: ({n}, H, W, 3), got {frames.shape}")
            for i in range(n):
                per_row[i]["frames"] = frames[i]
        self._rows.reset(list(range(n)), seeds, per_row)
        return self._rows.obs(), self._infos(range(n))

    def step(self, actions: Any):
        reward, terminated, truncated = self._rows.step(actions)
        obs, infos = self._rows.obs(), self._infos(range(self.num_envs))
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            for i in done:
                infos = self._add_info(infos, {"final_obs": obs[i].copy(), "final_info": self._rows.info(i)}, i)
            self._rows.reset(list(done), [None] * len(done), [{} for _ in done])
            fresh = self._rows.obs()
            obs[done] = fresh[done]
            for i in done:
                infos = self._add_info(infos, self._rows.info(i), i)
        return obs, reward, terminated, truncated, infos

    def _infos(self, rows: Any) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for i in rows:
            infos = self._add_info(infos, self._rows.info(i), i)
        return infos

    def render(self) -> np.ndarray:
        return self._rows.imag.images()


# ---------------------------------------------------------------------------------------------------------
# gymnasium.make("flexwm/WorldModel-v0", ...)


def make_world_model_env(ckpt: Any = None, *, start: Any = None, data: str | Path | None = None, env: str | None = None,
                         task: str | None = None, env_options: Any = None,
                         config: WorldModelEnvConfig | dict | None = None, device: str = "cpu",
                         flow_steps: int | None = None, ac_noise: str = "sample", fps: float | None = None,
                         action_low: Any = None, action_high: Any = None, render_mode: str | None = None,
                         **config_fields: Any) -> WorldModelEnv:
    """The entry point of `gymnasium.make("flexwm/WorldModel-v0", ckpt=...)`: a `WorldModelEnv` of the model at
    `ckpt` (a training run, a checkpoint, an exported folder, or a loaded world model).

    Episodes start from one of: `start` (anything `WorldModelEnv` takes), `data` (a dataset's first frames),
    `env` + `task` (live resets of a simulator: "metaworld", "pusht" or "gym:ENV_ID" with `env_options`; a gym
    env's task defaults to its one task; the simulator is closed by `close()`), or none (then pass
    reset(options={"frames": ...})). `config` and other keyword arguments are WorldModelEnvConfig fields
    (horizon, obs_mode, action_mode, frames_per_step, reward, ...). `flow_steps` defaults to 4 on a CPU, else 10.
    """
    from flexwm.envs import embodiment_of, is_gym, list_tasks, make_env

    given = [name for name, v in (("start", start), ("data", data), ("env", env)) if v is not None]
    if len(given) > 1:
        raise EnvError(f"give one start of episodes, not {' and '.join(given)}: start=, data= or env= (+ task=)")
    try:
        cfg = from_dict(WorldModelEnvConfig, {**(to_dict(config) if isinstance(config, WorldModelEnvConfig)
                                                 else dict(config or {})), **config_fields})
    except ConfigError as e:
        raise ConfigError(f"flexwm/WorldModel-v0: {e} (keyword arguments besides ckpt, start, data, env, task, "
                          "env_options, device, flow_steps, ac_noise, fps, action_low, action_high and render_mode "
                          "are WorldModelEnvConfig fields)") from None
    if isinstance(ckpt, (str, Path)):
        from flexwm.inference import load_run

        steps = flow_steps if flow_steps is not None else (4 if str(device) == "cpu" else 10)
        wm = load_run(ckpt, steps=steps, ac_noise=ac_noise, device=device, prefer_embodiment=embodiment_of(env))
    elif ckpt is None:
        raise ConfigError("flexwm/WorldModel-v0 needs ckpt=: a training run, a checkpoint, an exported model folder "
                          "or a loaded world model")
    else:
        wm = ckpt
    owned = None
    if data is not None:
        from flexwm.data import FlexDataset

        start = FlexDataset(data)
    elif env is not None:
        if task is None:
            tasks = list_tasks(env) if is_gym(env) or env == "pusht" else []
            if len(tasks) != 1:
                raise EnvError(f"env={env!r} has several tasks; give task= as well")
            task = tasks[0]
        start = owned = make_env(env, task, image_size=wm.image_size or (64, 64), env_options=env_options)
    try:
        out = WorldModelEnv(wm, start, cfg, action_low=action_low, action_high=action_high, render_mode=render_mode,
                            fps=fps)
    except BaseException:
        if owned is not None:
            owned.close()
        raise
    if owned is not None:
        out._owned.append(owned)
    return out


flexwm.register_gymnasium_envs()
