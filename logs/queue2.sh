#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/lane1.done ]; do sleep 10; done
python benchmarks/rl.py --run runs/cpu-nr-flex-ac3-ih --data data/avdc --episodes 50 --flow-steps 4 --bc-preset cpu --bc-steps 1500 --set iterations=3 --set success_threshold=0.611 --out benchmarks/results/rl_flex-ac3-ih.json > logs/rl_ih.log 2>&1
touch logs/rl_ih.done
