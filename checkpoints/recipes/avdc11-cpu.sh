#!/usr/bin/env bash
# Reproduce checkpoints/avdc11-cpu: the flexible model on the 11 AVDC Meta-World tasks, cpu preset.
#   make checkpoint-avdc11            (about 90 minutes on 2 CPU cores; every stage resumes)
# 1. data/avdc: 1,210 episodes = expert 50/task (reset seeds 0-49), noisy experts (noise 0.5 and 1.0, 20/task
#    each, seeds from 1000) and play (20/task, seeds from 2000), 200 steps, 64x64
# 2. runs/avdc11-cpu: flexwm train, cpu preset, flexible variant, 8000 steps x 32 windows (the compute of the
#    wam-only and ac-only models it replaces, 4000 x 32 each), frame tokenizer trained for its full 3000 steps
# 3. checkpoints/avdc11-cpu: flexwm export (weights, config, frame tokenizer, text-encoder cache)
set -euo pipefail
cd "$(dirname "$0")/../.."
FLEXWM=${FLEXWM:-.venv/bin/flexwm}
DATA=${DATA:-data/avdc}
RUN=${RUN:-runs/avdc11-cpu}
OUT=${OUT:-checkpoints/avdc11-cpu}
resume() { [[ -e "$1" ]] && echo --resume || true; }
"$FLEXWM" collect --env metaworld --tasks avdc --source expert --episodes 50 --seed 0 --workers 2 --out "$DATA" $(resume "$DATA")
"$FLEXWM" collect --env metaworld --tasks avdc --source noisy --noise 0.5,1.0 --episodes 20 --seed 1000 --workers 2 \
  --out "$DATA" --resume
"$FLEXWM" collect --env metaworld --tasks avdc --source play --episodes 20 --seed 2000 --workers 2 --out "$DATA" --resume
"$FLEXWM" train --data "$DATA" --preset cpu --out "$RUN" --steps 8000 --set tokenizer_max_seconds=null \
  $(resume "$RUN/run_config.json")
if [[ -e "$OUT/model_index.json" ]]; then
  echo "$OUT exists; move it away to export again" >&2
  exit 1
fi
"$FLEXWM" export "$RUN" --out "$OUT"
cp checkpoints/recipes/avdc11-cpu.md "$OUT/RECIPE.md"
