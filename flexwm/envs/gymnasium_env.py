"""Any gymnasium environment as a flexwm simulator: `--env gym:ENV_ID`.

ENV_ID is anything `gymnasium.make` accepts: a registered id ("Pendulum-v1"), a namespaced one, or
"module:Name-vN" (gymnasium imports the module, which registers the env). `GymEnvConfig` says how to read it:

* pixels: "render" (default) calls `env.render()` with render_mode="rgb_array"; a key of a Dict observation
  reads the image from the observation; "observation" when the (Box) observation is the image itself. Frames
  are converted to uint8 (H, W, 3) (channels-first, greyscale, RGBA and float [0, 1] images included) and
  resized to the requested image size.
* proprio: a key of a Dict observation; unset, a flat Box observation is the proprioception itself and a Dict
  observation has none. Without proprioception one constant 0 is recorded (the model takes a proprio input).
* success: the key of the success flag in `info`; unset, info["is_success"], else info["success"], else False;
  "terminated" counts an episode's termination (not its truncation) as success.
* instructions: the task's instruction, or a .json/.yaml/.txt file of them (the first is canonical); unset,
  the task name. The task name is the id without its module prefix ("Pendulum-v1").
* kwargs: keyword arguments of `gymnasium.make`.

The embodiment is derived from the id ("gym-pendulum-v1"), so a world model trained on the env gets its own
embodiment adapter. Actions must be a 1-d continuous Box with finite bounds. The privileged state recorded with
each step is the flattened observation without its images.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from flexwm.config import field, from_dict, parse_overrides
from flexwm.envs.base import Observation, RobotEnv, StepResult, check_image_size
from flexwm.errors import ConfigError, EnvError

PREFIX = "gym:"
DEFAULT_SUCCESS_KEYS = ("is_success", "success")
INSTRUCTION_FILES = (".json", ".yaml", ".yml", ".txt")


@dataclass
class GymEnvConfig:
    """How to read a gymnasium environment (`--env gym:ENV_ID`); set with `--env-set key=value`."""

    kwargs: dict = field(default_factory=dict, help="keyword arguments of gymnasium.make, e.g. kwargs.g=9.81")
    pixels: str = field("render", help="render (env.render() in rgb_array mode), a key of a Dict observation, or "
                                       "observation (the Box observation is the image)")
    proprio: str | None = field(None, help="key of a Dict observation holding the proprioception; unset: a flat Box "
                                           "observation is the proprioception, a Dict one has none; none: no "
                                           "proprioception")
    success: str | None = field(None, help="info key of the success flag (unset: is_success, else success); "
                                           "terminated: an episode's termination is its success")
    instructions: str | None = field(None, help="the task's instruction, or a .json/.yaml/.txt file of instructions "
                                                "(the first is canonical); unset: the task name")
    fps: int | None = field(None, ge=1, help="recorded frame rate; unset: the env's metadata render_fps, else 30")


def gym_config(options: GymEnvConfig | dict | None) -> GymEnvConfig:
    """A GymEnvConfig from itself, a (possibly partial) dict of its fields, or None (the defaults)."""
    if options is None:
        return GymEnvConfig()
    if isinstance(options, GymEnvConfig):
        return options
    try:
        return from_dict(GymEnvConfig, dict(options))
    except ConfigError as e:
        raise ConfigError(f"gym env options: {e}") from None


def parse_env_options(overrides: list[str]) -> GymEnvConfig:
    """`--env-set key=value` strings (dotted keys nest: kwargs.g=9.81; values are YAML) -> GymEnvConfig."""
    from flexwm.config import merge, to_dict

    data = to_dict(GymEnvConfig())
    for item in overrides:
        data = merge(data, parse_overrides([item]))
        try:
            from_dict(GymEnvConfig, data)
        except ConfigError as e:
            raise ConfigError(f"--env-set {item!r}: {e}") from None
    return from_dict(GymEnvConfig, data)


def is_gym(env: Any) -> bool:
    return isinstance(env, str) and env.startswith(PREFIX)


def gym_id(env: str) -> str:
    """"gym:Pendulum-v1" -> "Pendulum-v1" (EnvError when the id is missing)."""
    env_id = env[len(PREFIX):].strip() if is_gym(env) else ""
    if not env_id:
        raise EnvError(f"{env!r} names no gymnasium environment; use gym:ENV_ID, e.g. gym:Pendulum-v1 or "
                       "gym:my_package.envs:MyRobot-v0 (the module is imported first and registers the env)")
    return env_id


def gym_task(env: str) -> str:
    """The one task of a gym env: its id without the module prefix, usable as a file name ("ALE/Pong-v5" ->
    "ALE-Pong-v5")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", gym_id(env).rpartition(":")[2]).strip("-.") or "task"


def gym_embodiment(env: str) -> str:
    """The embodiment recorded for a gym env: "gym:Pendulum-v1" -> "gym-pendulum-v1"."""
    return "gym-" + re.sub(r"[^a-z0-9_-]+", "-", gym_task(env).lower()).strip("-")


def gym_instructions(task: str, instructions: str | None) -> list[str]:
    """The instructions of a gym task (the first is canonical): `instructions` itself, the list in a
    .json/.yaml/.txt file (a list, one line each for .txt, or a mapping task -> list), or [task]."""
    if instructions is None or not str(instructions).strip():
        return [task]
    path = Path(instructions)
    if path.suffix.lower() not in INSTRUCTION_FILES:
        return [str(instructions)]
    if not path.is_file():
        raise ConfigError(f"instructions file {path} does not exist; give an existing .json, .yaml or .txt file, or "
                          "the instruction text itself")
    import yaml

    text = path.read_text()
    try:
        if path.suffix.lower() == ".txt":
            data: Any = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"instructions file {path} cannot be read ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict):
        if task not in data:
            raise ConfigError(f"instructions file {path} has no entry for task {task!r} (it has {sorted(data)}); "
                              f"add one, or give a plain list of instructions")
        data = data[task]
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(s, str) and s.strip() for s in data):
        raise ConfigError(f"instructions file {path} must hold a non-empty list of instruction strings (or map the "
                          f"task name {task!r} to one)")
    return [s.strip() for s in data]


def to_image(frame: Any, size: tuple[int, int], where: str) -> np.ndarray:
    """An image as a new uint8 (H, W, 3) array of `size` (H, W): channels-first, greyscale, RGBA and float [0, 1]
    images are converted, other sizes resized (bilinear)."""
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise EnvError(f"{where} is not an image: shape {a.shape}, expected (H, W, 3); set the env option pixels "
                       "to render, to the observation key that holds the camera image, or to observation")
    a = np.repeat(a, 3, -1) if a.shape[-1] == 1 else a[..., :3]
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if a.dtype.kind == "f" and f.max() <= 1.0:
            f = f * 255.0  # float images in [0, 1]
        a = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    h, w = size
    if a.shape[:2] != (h, w):
        from PIL import Image

        a = np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((w, h), Image.Resampling.BILINEAR))
    return np.array(a, dtype=np.uint8, order="C")  # a writable copy, never a view of the env's own buffer


def _is_image_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) >= 2


def _make(env_id: str, kwargs: dict[str, Any]) -> Any:
    import gymnasium
    from gymnasium import error

    try:
        return gymnasium.make(env_id, **kwargs)
    except error.NamespaceNotFound as e:
        raise EnvError(f"gymnasium cannot make {env_id!r}: {e}. Install and import the package that registers "
                       "it, or use gym:module:Name-vN so flexwm imports the module first") from None
    except error.UnregisteredEnv as e:
        known = [k for k in gymnasium.registry if not k.startswith("flexwm/")]
        close = difflib.get_close_matches(env_id.rpartition(":")[2], known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise EnvError(f"gymnasium has no environment {env_id!r} ({e}).{hint} List the registered ids with "
                       "gymnasium.pprint_registry(); for your own env use gym:module:Name-vN, where importing "
                       "`module` registers Name-vN") from None
    except ImportError as e:
        raise EnvError(f"gymnasium cannot make {env_id!r}: {e}") from None
    except TypeError as e:
        raise EnvError(f"gymnasium.make({env_id!r}) rejected the keyword arguments {kwargs}: {e}; fix the "
                       "--env-set kwargs.NAME=VALUE options (env_options kwargs)") from None


def _require_key(where: str, obs_space: Any, keys: list[str] | None, what: str, key: str, not_dict_hint: str,
                 missing_hint: str) -> None:
    """The env's Dict observation has `key` (the `what` source: pixel or proprio), or a clear EnvError."""
    if keys is None:
        raise EnvError(f"{where} has a {type(obs_space).__name__} observation, not a Dict one, so it has no key "
                       f"{key!r}; {not_dict_hint}")
    if key not in keys:
        raise EnvError(f"{where}'s observation has no {what} key {key!r}; its keys are {keys}. {missing_hint}")


class GymnasiumEnv(RobotEnv):
    """One gymnasium environment as a RobotEnv (see the module docstring)."""

    def __init__(self, env: str, image_size: tuple[int, int] = (64, 64), options: GymEnvConfig | dict | None = None,
                 max_episode_steps: int | None = None) -> None:
        self.options = opts = gym_config(options)
        self.env_id, self.task, self.embodiment = gym_id(env), gym_task(env), gym_embodiment(env)
        self.image_size = check_image_size(image_size)
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise EnvError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self._instructions = gym_instructions(self.task, opts.instructions)
        kwargs = dict(opts.kwargs)
        if opts.pixels == "render":
            mode = kwargs.setdefault("render_mode", "rgb_array")
            if mode != "rgb_array":
                raise EnvError(f"gym:{self.env_id}: pixels=render needs render_mode 'rgb_array', but kwargs sets "
                               f"render_mode={mode!r}; drop kwargs.render_mode, or read the pixels from an "
                               "observation key")
        if kwargs.get("render_mode") in (None, "rgb_array"):  # off-screen: pygame-drawn envs need no display
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = int(max_episode_steps)  # gymnasium's TimeLimit at this length
        self._env = _make(self.env_id, kwargs)
        try:
            self._check_spaces()
        except BaseException:
            self._env.close()
            raise
        spec_limit = getattr(self._env.spec, "max_episode_steps", None)
        self.max_episode_steps = int(max_episode_steps or spec_limit or 200)
        fps = opts.fps or self._env.metadata.get("render_fps") or 30
        self.fps = max(1, int(round(float(fps))))
        self._obs: Any = None
        self._t = 0
        self._done = False

    # ---- setup checks ------------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"gym:{self.env_id}"

    def _check_spaces(self) -> None:
        space, opts, where = self._env.action_space, self.options, self._where
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
            raise EnvError(f"{where} has a discrete action space {space}; flexwm's world models act with continuous "
                           "actions (a 1-d gymnasium Box). Use the env's continuous variant if it has one (e.g. "
                           "gym:MountainCarContinuous-v0, gym:LunarLander-v3 with --env-set kwargs.continuous=true), "
                           "or register a version wrapped in a gymnasium.ActionWrapper that maps a Box action to a "
                           "discrete one")
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise EnvError(f"{where} has the action space {space}; flexwm needs a 1-d continuous gymnasium Box: "
                           "register a version wrapped in a gymnasium.ActionWrapper that takes a flat Box")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise EnvError(f"{where} has an unbounded action space {space}; flexwm needs finite bounds (they "
                           "normalise actions and bound planners): register a version whose action space has your "
                           "robot's limits")
        self.action_space = spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        obs_space = self._env.observation_space
        keys = list(obs_space.spaces) if isinstance(obs_space, spaces.Dict) else None
        if opts.pixels not in ("render", "observation"):
            _require_key(where, obs_space, keys, "pixel", opts.pixels,
                         "set pixels to render, or to observation if the observation is the image",
                         "Set pixels to one of them, or to render")
        if opts.pixels == "observation" and keys is not None:
            raise EnvError(f"{where} has a Dict observation (keys {keys}); set pixels to the key of the image")
        if opts.proprio is None or opts.proprio == "none":
            flat_box = keys is None and not _is_image_space(obs_space) and opts.pixels != "observation"
            self._proprio_key: str | None = "" if opts.proprio is None and flat_box else None
        else:
            _require_key(where, obs_space, keys, "proprio", opts.proprio,
                         "leave proprio unset (a flat Box observation is the proprioception) or set it to none",
                         "Set proprio to one of them, or to none")
            self._proprio_key = opts.proprio
        if self._proprio_key is None:
            self.proprio_dim = 1  # no proprioception: one constant 0
        else:
            sub = obs_space if self._proprio_key == "" else obs_space[self._proprio_key]
            self.proprio_dim = int(spaces.flatdim(sub))
        self._state_keys = [k for k in keys if k != opts.pixels and not _is_image_space(obs_space[k])] if keys else []

    # ---- RobotEnv ----------------------------------------------------------------------------------------

    @property
    def instruction(self) -> str:
        return self._instructions[0]

    def instructions(self, split: str = "all") -> list[str]:
        """A gym task has no held-out paraphrases: "canonical" is the first instruction, every split all of them."""
        return self._instructions[:1] if split == "canonical" else list(self._instructions)

    def reset(self, seed: int) -> Observation:
        seed = int(seed)
        if seed < 0:
            raise EnvError(f"reset seed must be >= 0, got {seed}")
        if self._env is None:
            raise EnvError(f"{self._where}: the environment was closed")
        self._obs, _ = self._env.reset(seed=seed)
        self._t, self._done = 0, False
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        if self._obs is None:
            raise EnvError(f"{self._where}: call reset(seed) before step()")
        if self._done:
            raise EnvError(f"{self._where}: the episode is over (done was returned); call reset(seed) first")
        a = self.check_action(action)
        obs, reward, terminated, truncated, info = self._env.step(a.astype(self._env.action_space.dtype))
        self._obs = obs
        self._t += 1
        success = self._success(info, bool(terminated))
        self._done = bool(terminated or truncated) or self._t >= self.max_episode_steps
        extra = {k: float(v) for k, v in info.items() if isinstance(v, (bool, int, float, np.number, np.bool_))}
        return StepResult(observation=self._observation(), success=success, done=self._done,
                          reward=float(reward), info=extra)

    def privileged_state(self) -> np.ndarray:
        """The flattened observation without its images, float32 (empty when the observation is only images)."""
        if self._obs is None:
            raise EnvError(f"{self._where}: call reset(seed) before privileged_state()")
        space = self._env.observation_space
        if isinstance(space, spaces.Dict):
            parts = [np.asarray(spaces.flatten(space[k], self._obs[k]), np.float32) for k in self._state_keys]
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if _is_image_space(space):
            return np.zeros(0, np.float32)
        return np.asarray(spaces.flatten(space, self._obs), np.float32)

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    @property
    def sim(self) -> Any:
        """The underlying gymnasium environment (for tests; do not step it directly)."""
        return self._env

    # ---- reading observations ----------------------------------------------------------------------------

    def _success(self, info: dict[str, Any], terminated: bool) -> bool:
        key = self.options.success
        if key == "terminated":
            return terminated
        if key is None:
            return next((bool(info[k]) for k in DEFAULT_SUCCESS_KEYS if k in info), False)
        if key not in info:
            raise EnvError(f"{self._where}: info has no success key {key!r}; its keys are {sorted(info)}. Set success "
                           "to one of them, to terminated, or leave it unset (is_success / success)")
        return bool(np.any(info[key]))

    def _frame(self) -> np.ndarray:
        pixels = self.options.pixels
        if pixels == "render":
            img = self._env.render()
            if img is None:
                raise EnvError(f"{self._where}: render() returned no image (render modes of the env: "
                               f"{self._env.metadata.get('render_modes')}); it needs an 'rgb_array' render mode, or "
                               "set pixels to the observation key holding the camera image")
            where = f"{self._where} render()"
        elif pixels == "observation":
            img, where = self._obs, f"{self._where}'s observation"
        else:
            img, where = self._obs[pixels], f"{self._where} observation[{pixels!r}]"
        return to_image(img, self.image_size, where)

    def _proprio(self) -> np.ndarray:
        if self._proprio_key is None:
            return np.zeros(1, np.float32)
        space = self._env.observation_space
        if self._proprio_key == "":
            return np.asarray(spaces.flatten(space, self._obs), np.float32)
        return np.asarray(spaces.flatten(space[self._proprio_key], self._obs[self._proprio_key]), np.float32)

    def _observation(self) -> Observation:
        return Observation(image=self._frame(), proprio=self._proprio(), instruction=self.instruction)
