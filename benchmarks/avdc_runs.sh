# Sourced by the study scripts that train several models on data/avdc (pretraining.sh, failure_play.sh): the tools,
# the data, the shared frame tokenizer and latent cache, and `train OUT ARGS...`, which trains the cpu preset into
# OUT (resuming a run that exists, skipping one that finished). Override with the environment variables below.
F=${FLEXWM:-.venv/bin/flexwm}
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data/avdc}
TOK=${TOK:-runs/avdc11-cpu/tokenizer}  # the frame tokenizer of a run on DATA (make checkpoint-avdc11 makes one)
LAT=${LAT:-runs/avdc11-cpu/latents}    # and its latent cache
train() {
  local out=$1; shift
  [[ -e $out/summary.json ]] && return 0
  "$F" train --data "$DATA" --preset cpu --out "$out" --set tokenizer_path="$TOK" --set latent_dir="$LAT" "$@" \
    $([[ -e $out/run_config.json ]] && echo --resume)
}
