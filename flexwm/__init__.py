"""flexwm: one flexibly conditioned robot world model.

The same weights act as a world action model (image + instruction -> video + actions), an action-conditioned
simulator (image + actions -> video), an inverse-dynamics model and a success/value estimator.

    import flexwm
    model = flexwm.load("flexwm/assets/demo")
    policy = flexwm.make_policy(model, "wam")
    result = flexwm.evaluate(policy, env="metaworld", task="button-press-v3", episodes=10)

The names below are imported on first use (see flexwm/api.py), so `import flexwm` loads no torch.
The world model as a gymnasium env, `gymnasium.make("flexwm/WorldModel-v0", ckpt=...)`, is registered by
`import flexwm.rl` (and here when gymnasium is already imported); "flexwm.rl:flexwm/WorldModel-v0" always works.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load": "flexwm.api", "make_policy": "flexwm.api", "evaluate": "flexwm.api", "train": "flexwm.api",
    "export": "flexwm.api", "WorldModelEnv": "flexwm.rl.world_model_env",
    "WorldModelVecEnv": "flexwm.rl.world_model_env", "WorldModelEnvConfig": "flexwm.rl.world_model_env",
}
__all__ = ["__version__", "collect", *_LAZY, "FlexWorldModelWrapper", "register_gymnasium_envs"]

WORLD_MODEL_ENV_ID = "flexwm/WorldModel-v0"


def register_gymnasium_envs() -> None:
    """Register flexwm's gymnasium environments (idempotent): "flexwm/WorldModel-v0", whose entry point
    (flexwm.rl.world_model_env.make_world_model_env) is imported only when an env is made."""
    import gymnasium

    if WORLD_MODEL_ENV_ID not in gymnasium.registry:
        gymnasium.register(WORLD_MODEL_ENV_ID, entry_point="flexwm.rl.world_model_env:make_world_model_env")


if "gymnasium" in sys.modules:  # registering costs nothing then; importing gymnasium here would (numpy)
    register_gymnasium_envs()


def __getattr__(name: str) -> Any:
    if name == "collect":  # the submodule flexwm.collect, callable as the API's collect(out, **config)
        return importlib.import_module("flexwm.collect")
    if name == "FlexWorldModelWrapper":  # the world-model class with `from_pretrained`
        return importlib.import_module("flexwm.models.interface").FlexWorldModelWrapper
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flexwm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
