"""Quickstart: load the shipped demo model, act with it in Meta-World, and imagine a rollout with it.

    python examples/quickstart.py                 # about 20 s on a CPU
    python examples/quickstart.py --max-steps 150 --episodes 3   # whole episodes

The same model (flexwm/assets/demo, or any run, checkpoint or `flexwm export` folder) is a policy (WAM mode:
instruction in, actions out) and a simulator (action-conditioned mode: actions in, imagined frames out).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

import flexwm  # noqa: E402

DEMO = Path(flexwm.__file__).parent / "assets" / "demo"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEMO), help="a run, checkpoint or exported folder")
    p.add_argument("--task", default="button-press-v3")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=8, help="steps per real episode (150: a whole one)")
    args = p.parse_args()

    # 1. the model, and a policy that acts with it: WAM mode, actions generated from frame + instruction
    model = flexwm.load(args.model)
    policy = flexwm.make_policy(model, "wam")

    # 2. success in the real simulator (held-out instruction paraphrases, reset seeds 10000, 10001, ...)
    result = flexwm.evaluate(policy, env="metaworld", task=args.task, episodes=args.episodes,
                             max_steps=args.max_steps)
    s = result["summary"]
    print(f"{args.task}: {s['successes']}/{s['episodes']} successes in {args.max_steps} steps, "
          f"{result['latency']['mean_s'] * 1000:.0f} ms per plan")

    # 3. the same model as a simulator: a gymnasium env whose steps are imagined from a real start frame
    from flexwm.envs import make_env

    real = make_env("metaworld", args.task)
    env = flexwm.WorldModelEnv(model, start=real, config=flexwm.WorldModelEnvConfig(horizon=4, obs_mode="image"))
    obs, info = env.reset(seed=0)
    frames = [obs]
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        frames.append(obs)
        if terminated or truncated:
            break
    real.close()
    print(f"imagined {len(frames) - 1} steps: frames {np.stack(frames).shape}, last reward {reward:+.3f}")


if __name__ == "__main__":
    main()
