"""`import flexwm`: a fast import that gives load, make_policy, evaluate, collect, train, export, WorldModelEnv and
__version__; and examples/quickstart.py runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "flexwm" / "assets" / "demo"
ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "HF_HUB_OFFLINE": "1"}


def test_import_is_light_and_names_are_lazy():
    code = ("import sys, flexwm; heavy = [m for m in ('torch', 'numpy', 'flexwm.api', 'metaworld') "
            "if m in sys.modules]; print(heavy); print(sorted(n for n in dir(flexwm) if not n.startswith('_')))")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    heavy, names = r.stdout.splitlines()
    assert heavy == "[]"
    for name in ("load", "make_policy", "evaluate", "collect", "train", "export", "WorldModelEnv",
                 "FlexWorldModelWrapper"):
        assert repr(name) in names


def test_version_matches_the_package_metadata():
    import flexwm

    declared = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert flexwm.__version__ == declared
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        flexwm.lod  # noqa: B018


def test_collect_is_the_module_and_the_function(tmp_path):
    import flexwm
    from flexwm.errors import FlexWMError

    assert flexwm.collect.CollectConfig.__name__ == "CollectConfig"  # the submodule flexwm.collect ...
    with pytest.raises(FlexWMError, match="unknown metaworld task"):  # ... called: collect a dataset
        flexwm.collect(tmp_path / "ds", env="metaworld", tasks="no-such-task", episodes=1)


def test_make_policy_takes_overrides_and_budget():
    import flexwm
    from flexwm.errors import ConfigError

    model = flexwm.load(DEMO)
    assert model.steps == 4  # flow steps default to 4 on a CPU, as flexwm eval --budget auto
    cem = flexwm.make_policy(model, "cem", population=12)
    assert cem.name == "cem" and cem.config["population"] == 12 and cem.config["iterations"] == 2  # cpu budget
    assert flexwm.make_policy(model, "cem", budget="default").config["population"] == 64
    with pytest.raises(ConfigError, match="populaton"):
        flexwm.make_policy(model, "cem", populaton=12)
    assert flexwm.make_policy(None, "random", action_space=_box()).name == "random"


def _box():
    import gymnasium as gym
    import numpy as np

    return gym.spaces.Box(-np.ones(4, np.float32), np.ones(4, np.float32))


@pytest.mark.slow
def test_evaluate_one_task_and_several():
    import flexwm

    policy = flexwm.make_policy(flexwm.load(DEMO), "random")
    one = flexwm.evaluate(policy, env="metaworld", task="button-press-v3", episodes=1, max_steps=4)
    assert one["task"] == "button-press-v3" and one["summary"]["episodes"] == 1 and one["max_steps"] == 4
    both = flexwm.evaluate(policy, env="metaworld", task="button-press-v3,reach-v3", episodes=1, max_steps=4)
    assert list(both["per_task"]) == ["button-press-v3", "reach-v3"] and both["pooled"]["episodes"] == 2


@pytest.mark.slow
def test_quickstart_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], env=ENV, capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "button-press-v3: " in r.stdout and "successes" in r.stdout and "imagined 4 steps" in r.stdout
