"""Simulator environments (Meta-World, PushT, any gymnasium env) and data-collection policies behind one small
interface.

    env = make_env("metaworld", "door-open-v3", image_size=(64, 64))
    policy = make_scripted_policy("noisy", env, noise=0.3, seed=0)
    episode = run_episode(env, policy, seed=0, source="noisy", noise=0.3)
    env = make_env("gym:Pendulum-v1", "Pendulum-v1", env_options={"pixels": "render"})   # flexwm.envs.gymnasium_env

Simulators are imported lazily: `import flexwm.envs` needs neither mujoco nor pygame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from flexwm.envs.base import Observation, RobotEnv, ScriptedPolicy, StepResult
from flexwm.envs.gymnasium_env import GymEnvConfig, gym_config, gym_embodiment, gym_instructions, gym_task, is_gym
from flexwm.envs.instructions import PLAY_INSTRUCTION, canonical_instruction, paraphrases
from flexwm.errors import EnvError

__all__ = [
    "ENVS", "EMBODIMENTS", "AVDC_TASKS", "expand_tasks", "list_tasks", "make_env", "make_scripted_policy",
    "run_episode", "embodiment_of", "check_env_name", "task_instruction", "is_gym", "GymEnvConfig", "SOURCES",
    "RobotEnv", "ScriptedPolicy", "Observation", "StepResult",
    "canonical_instruction", "paraphrases", "PLAY_INSTRUCTION",
]

# the built-in simulators; any gymnasium environment is "gym:ENV_ID" (flexwm.envs.gymnasium_env)
ENVS: tuple[str, ...] = ("metaworld", "pusht")
EMBODIMENTS: dict[str, str] = {"metaworld": "sawyer", "pusht": "pusht"}  # simulator -> the embodiment it records

# the 11 Meta-World tasks used by AVDC ("Learning to Act from Actionless Videos through Dense Correspondences")
AVDC_TASKS: tuple[str, ...] = (
    "door-open-v3", "door-close-v3", "basketball-v3", "shelf-place-v3", "button-press-v3",
    "button-press-topdown-v3", "faucet-close-v3", "faucet-open-v3", "handle-press-v3", "hammer-v3", "assembly-v3",
)

Source = Literal["expert", "noisy", "play", "random"]
SOURCES: tuple[str, ...] = ("expert", "noisy", "play", "random")
TASK_FREE: tuple[str, ...] = ("play", "random")  # sources without an instruction (outcome "play")


def check_env_name(env: str) -> str:
    """`env` if it names a simulator ("metaworld", "pusht" or "gym:ENV_ID"), else an EnvError listing them."""
    if is_gym(env):
        gym_task(env)  # raises when the id is missing
        return env
    if env not in ENVS:
        import difflib

        close = difflib.get_close_matches(str(env), ENVS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise EnvError(f"unknown simulator {env!r}.{hint} Choose one of {list(ENVS)}, or gym:ENV_ID for any "
                       "gymnasium environment (e.g. gym:Pendulum-v1, gym:my_package.envs:MyRobot-v0)")
    return env


def embodiment_of(env: str | None) -> str | None:
    """The embodiment a simulator records ("metaworld" -> "sawyer", "gym:Pendulum-v1" -> "gym-pendulum-v1");
    None for None or an unknown name."""
    if is_gym(env):
        return gym_embodiment(env)  # type: ignore[arg-type]
    return EMBODIMENTS.get(env) if env is not None else None


def task_instruction(env: str, task: str, env_opts: GymEnvConfig | dict | None = None) -> str:
    """The canonical instruction of `task` of simulator `env` (for a gym env: from its options, else the task name)."""
    if is_gym(env):
        return gym_instructions(task, gym_config(env_opts).instructions)[0]
    return canonical_instruction(task)


def expand_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names from "a,b", ["a", "b"] or "avdc" (the 11 AVDC tasks); empty names are dropped."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for t in (str(x).strip() for x in items):
        out += list(AVDC_TASKS) if t == "avdc" else [t] if t else []
    return out


def list_tasks(env: str) -> list[str]:
    """Task names of a simulator (a gym env has one: its id without the module prefix)."""
    check_env_name(env)
    if is_gym(env):
        return [gym_task(env)]
    if env == "metaworld":
        from flexwm.envs.metaworld import metaworld_tasks

        return metaworld_tasks()
    return ["pusht"]


def make_env(env: str, task: str, image_size: tuple[int, int] = (64, 64), camera: str | None = None,
             max_episode_steps: int | None = None, fast_render: bool = True,
             out_of_range: str = "clip", env_options: GymEnvConfig | dict | None = None) -> RobotEnv:
    """Build the environment for `task` of simulator `env` ("metaworld", "pusht" or "gym:ENV_ID"). None = the
    environment's default (camera, episode length). `out_of_range`: "clip" actions outside the action space to
    it, or "reject" them with an EnvError. `env_options`: how to read a gym env (GymEnvConfig or a dict of it)."""
    check_env_name(env)
    if out_of_range not in ("clip", "reject"):
        raise EnvError(f"out_of_range must be 'clip' or 'reject', got {out_of_range!r}")
    built = _make_env(env, task, image_size, camera, max_episode_steps, fast_render, env_options)
    built.out_of_range = out_of_range
    return built


def _make_env(env: str, task: str, image_size: tuple[int, int], camera: str | None,
              max_episode_steps: int | None, fast_render: bool, options: GymEnvConfig | dict | None) -> RobotEnv:
    opts = gym_config(options)
    if is_gym(env):
        from flexwm.envs.gymnasium_env import GymnasiumEnv

        if task != gym_task(env):
            raise EnvError(f"{env} has one task, {gym_task(env)!r}, not {task!r}; leave --task unset (or give "
                           f"{gym_task(env)!r})")
        if camera is not None:
            raise EnvError(f"{env} has one pixel source; leave camera unset and choose it with the env option pixels "
                           "(--env-set pixels=render or pixels=OBSERVATION_KEY)")
        return GymnasiumEnv(env, image_size=image_size, options=opts, max_episode_steps=max_episode_steps)
    if opts != GymEnvConfig():
        raise EnvError(f"env options (--env-set) apply to gym:ENV_ID environments only, not to {env!r}")
    if env == "metaworld":
        from flexwm.envs.metaworld import MetaWorldEnv

        kw = {}
        if camera is not None:
            kw["camera"] = camera
        if max_episode_steps is not None:
            kw["max_episode_steps"] = max_episode_steps
        return MetaWorldEnv(task, image_size=image_size, fast_render=fast_render, **kw)
    from flexwm.envs.pusht import PushTEnv

    if task != "pusht":
        raise EnvError(f"unknown pusht task {task!r}; the only task is 'pusht'")
    if camera is not None:
        raise EnvError("pusht has a single top-down view; leave camera unset (None)")
    return PushTEnv(image_size=image_size, **({} if max_episode_steps is None else
                                                {"max_episode_steps": max_episode_steps}))


def make_expert(env: RobotEnv) -> ScriptedPolicy:
    """The scripted expert for the task of `env`."""
    from flexwm.envs.policies import MetaWorldExpert, PushTExpert

    if env.embodiment == "sawyer":
        return MetaWorldExpert(env.task)
    if env.embodiment == "pusht":
        return PushTExpert()
    raise EnvError(f"no scripted expert for embodiment {env.embodiment!r}; collect with the sources play or random "
                   "(task-free), or add episodes of your own policy to a dataset")


def make_scripted_policy(source: Source, env: RobotEnv, noise: float = 0.0, seed: int = 0) -> ScriptedPolicy:
    """A data-collection policy for `env`: the scripted expert, the expert with action noise, task-free play (the
    embodiment's scripted play, else smooth random motion) or uniformly random actions."""
    from flexwm.envs.policies import BabblingPolicy, NoisyPolicy, PlayPolicy, RandomPolicy

    if source == "expert":
        return make_expert(env)
    if source == "noisy":
        return NoisyPolicy(make_expert(env), noise=noise, action_space=env.action_space, seed=seed)
    if source == "play":
        if env.embodiment in ("sawyer", "pusht"):
            return PlayPolicy(env.embodiment, env.action_space, seed=seed)
        return BabblingPolicy(env.action_space, seed=seed)
    if source == "random":
        return RandomPolicy(env.action_space, seed=seed)
    raise EnvError(f"unknown policy source {source!r}; choose one of {list(SOURCES)}")


def run_episode(env: RobotEnv, policy: ScriptedPolicy, seed: int, max_steps: int | None = None,
                source: Source = "expert", noise: float = 0.0):
    """Run one episode from `env.reset(seed)` and record it.

    Row t holds the observation at t, the action taken at t (as executed: clipped to the action space) and the
    success flag after that action. The episode ends when the env says done (time limit, or success if the env
    terminates on success) or after `max_steps` steps. Meta: outcome "play" for the task-free sources (play,
    random), else "success" if any step succeeded, else "failure"; the instruction is the canonical one, or ""
    for the task-free sources.
    """
    from flexwm.data.episode import Episode, EpisodeMeta

    if source not in SOURCES:
        raise EnvError(f"unknown policy source {source!r}; choose one of {list(SOURCES)}")
    if max_steps is not None and max_steps < 1:
        raise EnvError(f"max_steps must be >= 1, got {max_steps}")
    obs = env.reset(seed)
    policy.reset(seed)
    frames, proprio, actions, success, states = [], [], [], [], []
    limit = env.max_episode_steps if max_steps is None else int(max_steps)
    for _ in range(limit):
        state = env.privileged_state()
        action = env.check_action(policy.act(obs, state))
        result = env.step(action)
        frames.append(obs.image)
        proprio.append(obs.proprio)
        actions.append(action)
        success.append(result.success)
        states.append(state)
        obs = result.observation
        if result.done:
            break
    any_success = bool(np.any(success))
    meta = EpisodeMeta(
        embodiment=env.embodiment, task=env.task,
        instruction=PLAY_INSTRUCTION if source in TASK_FREE else env.instruction,
        outcome="play" if source in TASK_FREE else ("success" if any_success else "failure"),
        source=source, noise=float(noise), seed=int(seed),
        extra={"any_success": any_success} if source in TASK_FREE else {},
    )
    return Episode(frames=np.stack(frames).astype(np.uint8), proprio=np.stack(proprio).astype(np.float32),
                   actions=np.stack(actions).astype(np.float32), success=np.asarray(success, dtype=bool),
                   state=np.stack(states).astype(np.float32), meta=meta, fps=env.fps)
