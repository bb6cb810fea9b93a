#!/bin/bash
cd /work/main && source .venv/bin/activate
export MUJOCO_GL=egl OMP_NUM_THREADS=1
while [ ! -f benchmarks/results/steer_wam_cpu/handle-press-v3-imagination.json ]; do sleep 5; done
pkill -f queue.sh; pkill -f benchmarks/steer_wam.py
sleep 2
flexwm train --data data/avdc --preset cpu --variant flexible --out runs/cpu-nr-flex-ac3-sc --set init_from=runs/cpu-nr-flex-ac3 --set tokenizer_path=runs/cpu-flex/tokenizer --set latent_dir=runs/cpu-flex/latents --set model.mode_weights.ac=3 --set model.mode_weights.video=0.25 --set model.mode_weights.uniform=0.25 --set model.mode_weights.score=3 --set train.steps=1000 --set train.lr=2e-4 --set train.warmup_steps=50 > logs/train_sc.log 2>&1
touch logs/train_sc.done
