#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/act_fl10.done ]; do sleep 10; done
python benchmarks/rl.py --run runs/cpu-nr-flex-ac3 --data data/avdc --episodes 50 --flow-steps 4 --bc-preset cpu --bc-steps 1500 --set start=dataset --set reward=progress --set branch=8 --set starts=32 --set iterations=8 --out benchmarks/results/rl_branch8_flex-ac3.json > logs/rl_branch8.log 2>&1
touch logs/rl_branch8.done
