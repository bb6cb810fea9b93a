#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/rl_branch.done ]; do sleep 10; done
python benchmarks/rl.py --run runs/cpu-nr-flex-ac3 --data data/avdc --episodes 50 --flow-steps 4 --bc-preset cpu --bc-steps 1500 --set start=dataset --set reward=progress --set branch=4 --set starts=32 --set iterations=16 --out benchmarks/results/rl_branch16_flex-ac3.json > logs/rl_branch16.log 2>&1
touch logs/rl_branch16.done
