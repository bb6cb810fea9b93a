#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/rl_ih.done ]; do sleep 10; done
python benchmarks/steer_wam.py --run runs/cpu-nr-flex-ac3-ih --tasks button-press-v3 --episodes 50 --backends real --out benchmarks/results/steer_wam_real_cpu.json > logs/steer_real.log 2>&1
touch logs/steer_real.done
