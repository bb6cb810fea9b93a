#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/lane2.done ]; do sleep 10; done
python benchmarks/act.py --runs flex-ac3-ih=runs/cpu-nr-flex-ac3-ih --pairs flex-ac3-ih:best-of-n,cem --episodes 3 --jobs 1 --threads 1 --flow-steps 4 --out benchmarks/results/act_flex-ac3-ih.json > logs/act_ih.log 2>&1
touch logs/act_ih.done
