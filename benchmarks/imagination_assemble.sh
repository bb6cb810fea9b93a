#!/usr/bin/env bash
# Rebuild benchmarks/results/imagination_cpu.json from the raw results beside it (see benchmarks/imagination.py
# for the commands that made them).
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results/imagination_cpu
hybrid=()
for f in "$R"/hybrid-[ab].json; do [ -e "$f" ] && hybrid+=(--hybrid "$f"); done
# other hybrid settings, named by their files: hybrid-NAME-a.json, hybrid-NAME-b.json (NAME: agree = agreement
# scoring with 4 proposals, agree8 = with 8)
for f in "$R"/hybrid-*-[ab].json; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .json); name=${name#hybrid-}; name=${name%-[ab]}
  hybrid+=(--hybrid-variant "$name=$f")
done
[ ${#hybrid[@]} -gt 0 ] && hybrid+=(--wam benchmarks/results/headline_cpu/flex-exec4-a.json
                                    --wam benchmarks/results/headline_cpu/flex-exec4-b.json)
# claim 5a: models trained with and without the failure + play episodes (benchmarks/failure_play.sh)
extra=()
[ -e "$R/failure_play_ac_error.json" ] && extra+=(--failure-play "$R/failure_play_ac_error.json")
for name in with without; do
  [ -e "$R/cal-fp-$name.json" ] && extra+=(--failure-play-calibration "$name=$R/cal-fp-$name.json")
done
python benchmarks/imagination.py assemble --dir "$R/suite" \
  --calibration flexible="$R/cal-flex4.json" --calibration ac-only="$R/cal-ac4.json" --rule-data "$R/head-data" \
  --speed "$R/speed-flow4.json" --speed-fast "$R/speed-flow1.json" --calibration-fast "$R/cal-flex1.json" \
  --speed-fast "$R/speed-flow2.json" --calibration-fast "$R/cal-flex2.json" --head-refit "$R/head_refit.json" \
  --drift "$R/drift_200_steps.json" \
  "${hybrid[@]}" "${extra[@]}" --out benchmarks/results/imagination_cpu.json
