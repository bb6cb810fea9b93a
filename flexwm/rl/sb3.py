"""stable-baselines3 view of a `WorldModelVecEnv`: PPO/SAC step all imagined envs in one batched model call.

    from stable_baselines3 import PPO
    venv = SB3VecEnv(WorldModelVecEnv(wm, start=dataset, num_envs=16))
    PPO("MlpPolicy", venv, seed=0).learn(20_000)

SB3's autoreset convention is the same-step one: a finished env's last observation is in
infos[i]["terminal_observation"] and "TimeLimit.truncated" marks a time-limit end (so PPO bootstraps it).
Needs the `rl` extra (stable-baselines3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from flexwm.rl.world_model_env import WorldModelVecEnv


class SB3VecEnv(VecEnv):
    def __init__(self, venv: WorldModelVecEnv):
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        opts = self._options[0] if self._options and self._options[0] else None
        obs, _ = self.venv.reset(seed=seeds, options=opts)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, reward, terminated, truncated, infos = self.venv.step(self._actions)
        done = terminated | truncated
        out: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info = {k: v[i] for k, v in infos.items() if not k.startswith("_") and k not in ("final_obs",
                                                                                                "final_info")}
            if done[i]:
                info.update({k: v[i] for k, v in infos["final_info"].items() if not k.startswith("_")})
                info["terminal_observation"] = infos["final_obs"][i]
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            out.append(info)
        return obs, reward.astype(np.float32), done, out

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.venv.render())

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self.venv, attr_name, getattr(self.venv.config, attr_name, None))
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: Any = None, **method_kwargs) -> list[Any]:
        raise NotImplementedError("imagined envs are stepped together; call methods on .venv instead")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
