#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/act_wo10.done ]; do sleep 10; done
python benchmarks/act.py --runs flexible=runs/cpu-nr-flexible --pairs flexible:wam,best-of-n --episodes 10 --jobs 2 --threads 1 --flow-steps 4 --out benchmarks/results/act_flexible_10eps.json > logs/act_fl10.log 2>&1
touch logs/act_fl10.done
