"""Reinforcement learning in imagination: the world model as a gymnasium environment.

`WorldModelEnv` (one env) and `WorldModelVecEnv` (N envs, one batched model call per step) start from real
frames and imagine every later one with the action-conditioned mode; `flexwm.rl.sb3.SB3VecEnv` hands the
vector env to stable-baselines3. `Imagination` is the batched core they share with policy evaluation.
Importing this package registers `gymnasium.make("flexwm/WorldModel-v0", ckpt=...)` (`make_world_model_env`).
"""

from flexwm.rl.imagination import Imagination
from flexwm.rl.world_model_env import (
    DatasetStarts,
    FrameStarts,
    SimulatorStarts,
    WorldModelEnv,
    WorldModelEnvConfig,
    WorldModelVecEnv,
    make_world_model_env,
)

__all__ = ["Imagination", "WorldModelEnv", "WorldModelVecEnv", "WorldModelEnvConfig",
           "DatasetStarts", "SimulatorStarts", "FrameStarts", "make_world_model_env"]
