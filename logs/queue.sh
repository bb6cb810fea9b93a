#!/bin/bash
# lane scheduler: after tune-head, calibrate (2 threads), then two 1-thread lanes
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl
while [ ! -f logs/tune_head.done ]; do sleep 10; done
OMP_NUM_THREADS=2 flexwm calibrate --ckpt runs/cpu-nr-flex-ac3-ih > logs/calibrate_ih.log 2>&1
cp runs/cpu-nr-flex-ac3-ih/imagined_calibration.json benchmarks/results/calibration_flex-ac3-ih.json
cp runs/cpu-nr-flex-ac3-ih/head_tuning.json benchmarks/results/head_tuning_flex-ac3-ih.json
touch logs/calibrate_ih.done
(
  export OMP_NUM_THREADS=1
  flexwm evaluate-policies --ckpt runs/cpu-nr-flex-ac3-ih --suite examples/suite.yaml --task button-press-v3 --episodes 8 --success-threshold calibrated --out benchmarks/results/bench_cpu/policy_eval_flex-ac3-ih_calibrated > logs/pe_ih_cal.log 2>&1
  flexwm evaluate-policies --ckpt runs/cpu-nr-flex-ac3-ih --suite examples/suite_bc.yaml --task button-press-v3 --episodes 8 --success-threshold calibrated --out benchmarks/results/bench_cpu/policy_eval_bc_flex-ac3-ih > logs/pe_bc_ih.log 2>&1
  touch logs/lane1.done
) &
(
  export OMP_NUM_THREADS=1
  python benchmarks/steer_wam.py --run runs/cpu-nr-flex-ac3-ih --tasks button-press-v3,handle-press-v3,door-open-v3 --episodes 50 --backends imagination --out benchmarks/results/steer_wam_cpu.json > logs/steer.log 2>&1
  touch logs/lane2.done
) &
wait
