#!/usr/bin/env bash
# Train the flexible, ac-only and wam-only variants of one preset on the same data with the same compute,
# sharing one frame tokenizer and one latent cache (so the comparison isolates the world model's training).
#
#   bash benchmarks/train_variants.sh [DATA_DIR] [PRESET] [PREFIX] [TOKENIZER_RUN]
#
# TOKENIZER_RUN is a run whose tokenizer/ (and latents/) are reused; without it the flexible run trains one.
# Every command resumes, so rerunning after an interruption continues where it stopped.
set -euo pipefail
DATA=${1:-data/avdc}
PRESET=${2:-cpu}
PREFIX=${3:-runs/${PRESET}}
TOK_RUN=${4:-}
FLEXWM=${FLEXWM:-flexwm}

share=()
if [[ -n "$TOK_RUN" ]]; then
  share=(--set "tokenizer_path=$TOK_RUN/tokenizer" --set "latent_dir=$TOK_RUN/latents")
fi
for variant in flexible ac-only wam-only; do
  out="$PREFIX-$variant"
  resume=()
  [[ -d "$out/checkpoints" ]] && resume=(--resume)
  echo "== $variant -> $out"
  "$FLEXWM" train --data "$DATA" --preset "$PRESET" --variant "$variant" --out "$out" "${share[@]}" "${resume[@]}"
  if [[ -z "$TOK_RUN" ]]; then  # the first run's tokenizer and latents are shared by the others
    TOK_RUN="$out"
    share=(--set "tokenizer_path=$TOK_RUN/tokenizer" --set "latent_dir=$TOK_RUN/latents")
  fi
done
