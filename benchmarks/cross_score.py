"""Whose fault is a wrong imagined success: the imagined futures or the success head? Cross-score to find out.

    python benchmarks/cross_score.py --runs flexible=runs/cpu-nr-flexible ac-only=runs/cpu-nr-ac-only \
        --task button-press-v3 --episodes 8 --out benchmarks/results/cross_score_cpu.json

Real action sequences of three policies (the scripted expert, the expert with noise 2.0, uniform random) are
recorded in the real simulator from reset seeds --seed.., then replayed open-loop in every model's imagination
from the same real first frames (frame_stride actions per imagined frame, the whole episode). Every imagined
window is scored by every model's success head (they must share the frame tokenizer). Reported per
(generator, scorer, policy): the mean over episodes of the maximum P(success) and the number of episodes above
0.5, next to the real success rate. A generator whose futures follow the actions gives high scores to the
expert and low ones to random actions under any good scorer; `--guidance` adds rows with action guidance.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("MUJOCO_GL", "egl")
from common import write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR (same tokenizer)")
    p.add_argument("--task", default="button-press-v3")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--flow-steps", type=int, default=4)
    p.add_argument("--guidance", default="1", help="comma-separated action-guidance scales of the generators")
    p.add_argument("--out", default="benchmarks/results/cross_score.json")
    args = p.parse_args()

    from flexwm.envs import make_env, make_expert
    from flexwm.envs.policies import NoisyPolicy
    from flexwm.evaluation.policy_eval import ScriptedAgent, _run_real
    from flexwm.inference import load_run
    from flexwm.models.interface import LatentState
    from flexwm.planning import make_policy
    from flexwm.rl.imagination import Imagination

    wms = {name: load_run(path, steps=args.flow_steps) for name, path in (s.split("=", 1) for s in args.runs)}
    env = make_env("metaworld", args.task, image_size=(64, 64))
    seeds = list(range(args.seed, args.seed + args.episodes))
    n, stride = len(seeds), 4
    agents = {"expert": ScriptedAgent(make_expert(env), env),
              "noisy-2.0": ScriptedAgent(NoisyPolicy(make_expert(env), noise=2.0, action_space=env.action_space), env),
              "random": make_policy("random", action_space=env.action_space)}
    real = {k: _run_real(env, a, seeds, args.horizon) for k, a in agents.items()}
    rows = []
    for gen_name, gen in wms.items():
        for scale in (float(s) for s in args.guidance.split(",")):
            gen.ac_guidance = scale
            for pol, rec in real.items():
                imag = Imagination(gen, n)
                imag.seed(range(n), seeds)
                first = rec["first"]
                imag.start(range(n), np.stack([o.image for o in first]), [o.instruction for o in first])
                best = {k: np.zeros(n) for k in wms}
                for k in range(args.horizon // stride):
                    imag.step(rec["actions"][:, k * stride:(k + 1) * stride])
                    C = imag.window.shape[1] - imag.future_frames
                    for s_name, scorer in wms.items():
                        state = LatentState(context=imag.window[:, :C], proprio=None, embodiment=scorer.embodiment)
                        with torch.no_grad():
                            prob, _ = scorer.score(state, imag.window[:, C:], first[0].instruction)
                        best[s_name] = np.maximum(best[s_name], prob.float().numpy())
                for s_name, b in best.items():
                    rows.append({"generator": gen_name, "guidance": scale, "scorer": s_name, "policy": pol,
                                 "real_rate": float(np.mean(rec["success"])), "mean_max_prob": float(b.mean()),
                                 "imagined_successes": int((b > 0.5).sum()), "episodes": n})
                    print(f"gen {gen_name:10s} g={scale:<4} scorer {s_name:10s} {pol:10s} real "
                          f"{np.mean(rec['success']):.2f}  imagined {int((b > 0.5).sum())}/{n}  "
                          f"mean max P {b.mean():.2f}", flush=True)
    write_result(args.out, {"runs": dict(s.split("=", 1) for s in args.runs), "task": args.task, "seeds": seeds,
                            "horizon": args.horizon, "flow_steps": args.flow_steps, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
