#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f logs/train_sc.done ]; do sleep 10; done
flexwm calibrate --ckpt runs/cpu-nr-flex-ac3-sc > logs/calibrate_sc.log 2>&1
cp runs/cpu-nr-flex-ac3-sc/imagined_calibration.json benchmarks/results/calibration_flex-ac3-sc.json
flexwm evaluate-policies --ckpt runs/cpu-nr-flex-ac3-sc --suite examples/suite.yaml --task button-press-v3 --episodes 8 --success-threshold calibrated --out benchmarks/results/bench_cpu/policy_eval_flex-ac3-sc_calibrated > logs/pe_sc_cal.log 2>&1
touch logs/pe_sc.done
