"""Meta-World (v3, MuJoCo) environment: one of the 50 MT1 tasks on the Sawyer arm, seen by one camera.

Seeding. Meta-World's MT1 benchmark pre-samples 50 object/goal placements from a benchmark seed and picks one
of them at random on every reset, so a reset seed alone does not fix the scene. This environment instead lets the
reset seed draw the placement directly: `reset(seed)` reseeds the task's own random generator and samples a
fresh object/goal placement from the same range MT1 samples from (``_random_reset_space``). The same seed
always gives the same placement and the same first image, whatever ran before; different seeds give different
placements. The goal position is part of the observation, as in MT1 (``partially_observable = False``), which
the scripted experts need.

Episodes. Meta-World's own 500-step horizon (``max_path_length``) is lifted; this environment ends an episode after
`max_episode_steps` steps. By default it does not end on success (`terminate_on_success=False`), so every
episode has its full length and the per-step success flags are recorded (a task can be succeeded, then undone).

Images. The camera image is rendered by `flexwm.envs.rendering.OffscreenRenderer` (EGL by default), the right
way up: Meta-World's corner cameras are mounted upside down, and their images are rotated by 180 degrees so world
"up" is image "up" (the old mujoco-py renders were flipped vertically instead, which mirrors the scene).
"""

from __future__ import annotations

import difflib

import numpy as np

from flexwm.envs import rendering  # chooses the GL backend before mujoco is imported
from flexwm.envs.base import Observation, RobotEnv, StepResult, check_image_size
from flexwm.errors import EnvError

CAMERAS: tuple[str, ...] = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
OBS_DIM = 39  # hand xyz, gripper opening, 2 x (object xyz + quaternion), the same 18 at t-1, goal xyz
PROPRIO_DIM = 4  # hand xyz + gripper opening: the first 4 dims of the observation


def metaworld_tasks() -> list[str]:
    """The 50 Meta-World v3 task names, in Meta-World's own order."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return list(ALL_V3_ENVIRONMENTS)


def _check_task(task: str) -> None:
    tasks = metaworld_tasks()
    if task not in tasks:
        hint = difflib.get_close_matches(task, tasks, n=1)
        hint_text = f" Did you mean {hint[0]!r}?" if hint else ""
        raise EnvError(f"unknown Meta-World task {task!r}.{hint_text} Valid tasks: {', '.join(tasks)}")


class MetaWorldEnv(RobotEnv):
    """One Meta-World v3 task. Actions: 4-d in [-1, 1] (hand xyz displacement, gripper effort)."""

    embodiment = "sawyer"

    def __init__(self, task: str, image_size: tuple[int, int] = (64, 64), camera: str = "corner2",
                 max_episode_steps: int = 200, terminate_on_success: bool = False,
                 fast_render: bool = True) -> None:
        _check_task(task)
        if camera not in CAMERAS:
            hint = difflib.get_close_matches(camera, CAMERAS, n=1)
            raise EnvError(f"unknown Meta-World camera {camera!r}"
                           f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; choose one of {list(CAMERAS)}")
        if int(max_episode_steps) < 1:
            raise EnvError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task = task
        self.camera = camera
        self.image_size = check_image_size(image_size)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.fast_render = bool(fast_render)
        self.proprio_dim = PROPRIO_DIM

        env = ALL_V3_ENVIRONMENTS[task](render_mode=None)  # we render ourselves (below)
        # the MT1 configuration: goal visible in the observation, placement drawn from the env's seeded RNG
        env._partially_observable = False
        del env.sawyer_observation_space  # cached property: recomputed with the goal dims
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = 2**62  # lift Meta-World's own 500-step horizon; this environment ends episodes
        self._env = env
        self.action_space = env.action_space
        self.fps = int(round(1.0 / env.dt))  # control rate (80 Hz: 5 physics steps of 2.5 ms)

        h, w = self.image_size
        self._renderer = rendering.OffscreenRenderer(env.model, h, w, camera, fast=self.fast_render)
        self._obs: np.ndarray | None = None
        self._t = 0
        self._done = False

    # ---- RobotEnv ----------------------------------------------------------------------------------------

    def reset(self, seed: int) -> Observation:
        import mujoco

        seed = int(seed)
        if seed < 0:
            raise EnvError(f"reset seed must be >= 0, got {seed}")
        env = self._env
        # a clean slate (solver warm-starts, contacts, controls), so a seed's episode never depends on history
        mujoco.mj_resetData(env.model, env.data)
        env.seed(seed)  # the task's RNG: the object/goal placement
        env.reset()
        # Meta-World moves objects by editing model.body_pos after its last forward pass, so the observation
        # (and the scene) it returns from reset can show the previous placement: recompute both.
        mujoco.mj_forward(env.model, env.data)
        obs = env._get_obs()
        obs[18:36] = obs[:18]  # as Meta-World's reset does: the "previous" frame is the current one
        self._obs = np.asarray(obs, dtype=np.float32)
        self._t = 0
        self._done = False
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        if self._obs is None:
            raise EnvError(f"{self.task}: call reset(seed) before step()")
        if self._done:
            raise EnvError(f"{self.task}: the episode is over (done was returned); call reset(seed) first")
        a = self.check_action(action)
        obs, reward, _terminated, _truncated, info = self._env.step(a)
        self._obs = np.asarray(obs, dtype=np.float32)
        self._t += 1
        success = bool(info.get("success", False))
        self._done = self._t >= self.max_episode_steps or (self.terminate_on_success and success)
        extra = {k: float(v) for k, v in info.items() if np.isscalar(v)}
        return StepResult(observation=self._observation(), success=success, done=self._done,
                          reward=float(reward), info=extra)

    def privileged_state(self) -> np.ndarray:
        if self._obs is None:
            raise EnvError(f"{self.task}: call reset(seed) before privileged_state()")
        return self._obs.copy()

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    # ---- helpers -----------------------------------------------------------------------------------------

    def render(self) -> np.ndarray:
        """The current camera image, (H, W, 3) uint8."""
        if self._renderer is None:
            raise EnvError(f"{self.task}: the environment was closed")
        return self._renderer.render(self._env.data)

    def render_segmentation(self) -> np.ndarray:
        """(H, W) geom-id map of the current camera view (-1 = background), oriented like `render`."""
        if self._renderer is None:
            raise EnvError(f"{self.task}: the environment was closed")
        return self._renderer.render_segmentation(self._env.data)

    @property
    def sim(self):
        """The underlying Meta-World environment (for experts and tests; do not step it directly)."""
        return self._env

    def _observation(self) -> Observation:
        assert self._obs is not None
        return Observation(image=self.render(), proprio=self._obs[:PROPRIO_DIM].copy(),
                           instruction=self.instruction)
