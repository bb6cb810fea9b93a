"""Reinforcement learning in imagination: the world model as a gymnasium environment.

`WorldModelEnv` (one env) and `WorldModelVecEnv` (N envs, one batched model call per step) start from real
frames and imagine every later one with the action-conditioned mode; `flexwm.rl.sb3.SB3VecEnv` hands the
vector env to stable-baselines3. `Imagination` is the batched core they share with policy evaluation.
"""

from flexwm.rl.imagination import Imagination
from flexwm.rl.world_model_env import (
    DatasetStarts,
    FrameStarts,
    SimulatorStarts,
    WorldModelEnv,
    WorldModelEnvConfig,
    WorldModelVecEnv,
)

__all__ = ["Imagination", "WorldModelEnv", "WorldModelVecEnv", "WorldModelEnvConfig",
           "DatasetStarts", "SimulatorStarts", "FrameStarts"]
