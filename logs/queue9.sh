#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/act_wo10.done ]; do sleep 10; done
python benchmarks/act.py --runs flexible=runs/cpu-nr-flexible --pairs flexible:best-of-n --episodes 3 --jobs 1 --threads 1 --flow-steps 4 --out benchmarks/results/act_flexible_bon.json > logs/act_fl10.log 2>&1
touch logs/act_fl10.done
