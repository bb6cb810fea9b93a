#!/usr/bin/env bash
# Claim 5a of the imagination study: does training on failures and autonomous play help, at equal compute?
# Two flexible models from scratch, 2000 x 32 windows each, one on every training episode of data/avdc and one on
# its successes only; compared on action-conditioned error per outcome on held-out episodes and on the held-out
# imagined-success AUC. Writes benchmarks/results/imagination_cpu/{failure_play_ac_error,cal-fp-*}.json; then
# `bash benchmarks/imagination_assemble.sh` puts them into imagination_cpu.json. About 60 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/avdc_runs.sh
OUT=${OUT:-runs/failure-play}
R=benchmarks/results/imagination_cpu
train "$OUT/with" --steps 2000
train "$OUT/without" --steps 2000 --set "train_episodes.outcomes=[success]"
for name in with without; do
  [[ -e $R/cal-fp-$name.json ]] || "$F" calibrate --ckpt "$OUT/$name" --flow-steps 4 --out "$R/cal-fp-$name.json"
done
"$PY" benchmarks/train.py ac-error --runs with="$OUT/with" without="$OUT/without" --starts 2 --max-episodes 15 \
  --out "$R/failure_play_ac_error.json"
