#!/usr/bin/env bash
# LeRobot's own training command, `lerobot-train` (lerobot 0.4.4), on a dataset written by flexwm.
# Not part of the test suite: `make lerobot-train` builds the LeRobot environment (.venv-lerobot-train) and runs
#
#     benchmarks/lerobot_train.sh FLEXWM_PYTHON LEROBOT_VENV OUT
#
# 1. flexwm's venv collects a small Meta-World dataset (`flexwm collect`: button-press-v3, expert and play
#    episodes, 64x64 H.264 video) into OUT/dataset.
# 2. `lerobot-train` trains ACT and diffusion on it for a few steps on the CPU, with LeRobot's defaults apart from
#    the policy type, the device, the step count, batch size, no data-loader workers, no checkpoint and a loss
#    line every step. ACT's default ImageNet backbone weights come from download.pytorch.org; where they are not in
#    torch's hub cache, ACT runs with `--policy.pretrained_backbone_weights=null` (a randomly initialised backbone).
#    No `--dataset.video_backend`: without torchcodec LeRobot falls back to its "pyav" backend.
# 3. OUT/summary.json: the loss at each step per policy; the script fails when a run does not reach
#    "End of training".
set -euo pipefail
FLEXWM_PY=$1
LRVENV=$2
OUT=${3:-runs/lerobot-train}
STEPS=${LEROBOT_TRAIN_STEPS:-4}
POLICIES=${LEROBOT_TRAIN_POLICIES:-act diffusion}

rm -rf "$OUT"
mkdir -p "$OUT"
"$FLEXWM_PY" -m flexwm.cli collect --env metaworld --tasks button-press-v3 --source expert,play --episodes 2 \
  --out "$OUT/dataset" > "$OUT/collect.json"

for policy in $POLICIES; do
  extra=()
  if [ "$policy" = act ] && ! "$LRVENV/bin/python" -c "
import os, sys, torch.hub
sys.exit(not os.path.exists(os.path.join(torch.hub.get_dir(), 'checkpoints', 'resnet18-f37072fd.pth')))"; then
    extra+=(--policy.pretrained_backbone_weights=null)
  fi
  cmd=("$LRVENV/bin/lerobot-train" --dataset.repo_id=local/flexwm "--dataset.root=$OUT/dataset"
       "--policy.type=$policy" --policy.device=cpu --policy.push_to_hub=false "${extra[@]}"
       "--steps=$STEPS" --batch_size=2 --num_workers=0 --save_checkpoint=false --log_freq=1
       "--output_dir=$OUT/$policy")
  echo "${cmd[*]}" | tee "$OUT/$policy.cmd"
  "${cmd[@]}" > "$OUT/$policy.log" 2>&1 || { tail -40 "$OUT/$policy.log"; exit 1; }
  grep -o 'step:[0-9]* .*loss:[0-9.e+-]*' "$OUT/$policy.log" | sed 's/ smpl.*loss:/ loss:/'
  grep -q "End of training" "$OUT/$policy.log"
done

"$LRVENV/bin/python" - "$OUT" $POLICIES <<'EOF'
import json, re, sys
from pathlib import Path

out, policies = Path(sys.argv[1]), sys.argv[2:]
summary = {"collect": json.loads((out / "collect.json").read_text())}
for p in policies:
    log = (out / f"{p}.log").read_text()
    summary[p] = {
        "command": (out / f"{p}.cmd").read_text().strip(),
        "losses": [float(x) for x in re.findall(r"step:\d+ smpl:\S+ .*?loss:([0-9.e+-]+)", log)],
        "num_learnable_params": int(re.search(r"num_learnable_params=(\d+)", log).group(1)),
    }
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({p: summary[p]["losses"] for p in policies}))
EOF
