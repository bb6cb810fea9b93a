#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/pe_sc.done ]; do sleep 10; done
python benchmarks/act.py --runs wam-only=runs/cpu-nr-wam-only --pairs wam-only:wam-seq,best-of-n --episodes 3 --jobs 1 --threads 1 --flow-steps 4 --out benchmarks/results/act_wam-only.json > logs/act_wo.log 2>&1
touch logs/act_wo.done
