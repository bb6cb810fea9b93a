#!/usr/bin/env bash
# Video pretraining vs scratch with 10 action-labelled demonstrations per task (11 AVDC tasks), equal fine-tuning
# compute; writes benchmarks/results/pretraining_cpu.json. Needs data/avdc and the frame tokenizer of a run on it
# (make checkpoint-avdc11 makes both; TOK and LAT point at that run's tokenizer and latent cache).
# About 100 minutes on 2 CPU cores (pretraining ~30, each fine-tuning ~20, each evaluation ~20); every stage resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/avdc_runs.sh
OUT=${OUT:-runs/pretraining}
DEMOS=(--set "train_episodes.sources=[expert]" --set "train_episodes.outcomes=[success]" --set train_episodes.per_task=10)
TASKS=door-open-v3,door-close-v3,basketball-v3,shelf-place-v3,button-press-v3,hammer-v3,button-press-topdown-v3,faucet-close-v3,faucet-open-v3,handle-press-v3,assembly-v3
evaluate() {  # RUN OUT_JSON
  [[ -e $2 ]] || "$F" eval --ckpt "$1" --task $TASKS --policy wam --episodes 20 --seed 20000 --flow-steps 4 \
    --set execute=4 --out "$2"
}
# 1. video mode only: no action and no proprioception ever reaches the model
train "$OUT/video-3k" --steps 3000 --set model.proprio_drop=1.0 \
  --set model.mode_weights='{wam: 0, ac: 0, inverse: 0, policy: 0, score: 0, uniform: 0, video: 1.0}'
# 2. fine-tune it, and 3. train from scratch, on the same 10 successful expert demonstrations per task
train "$OUT/ft-pretrained-2k" --steps 2000 "${DEMOS[@]}" --set init_from="$OUT/video-3k"
train "$OUT/ft-scratch-2k" --steps 2000 "${DEMOS[@]}"
# 4. the same 220 episodes (reset seeds 20000-20019, held-out instructions) for both
evaluate "$OUT/ft-pretrained-2k" "$OUT/eval-pretrained.json"
evaluate "$OUT/ft-scratch-2k" "$OUT/eval-scratch.json"
# the raw evaluations are kept beside the results file
R=benchmarks/results/pretraining_cpu
mkdir -p $R
cp "$OUT/eval-pretrained.json" "$OUT/eval-scratch.json" $R/
"$PY" benchmarks/pretraining.py --eval video-pretrained=$R/eval-pretrained.json --eval scratch=$R/eval-scratch.json \
  --pretrain-run "$OUT/video-3k" --finetune-run video-pretrained="$OUT/ft-pretrained-2k" \
  --finetune-run scratch="$OUT/ft-scratch-2k" --out benchmarks/results/pretraining_cpu.json
