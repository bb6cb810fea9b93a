#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/steer_real.done ]; do sleep 10; done
python benchmarks/pessimism_probe.py --run runs/cpu-nr-flex-ac3 --samples 4 --out benchmarks/results/pessimism_probe_flex-ac3.json > logs/probe.log 2>&1
touch logs/probe.done
