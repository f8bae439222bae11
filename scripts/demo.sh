#!/usr/bin/env bash
# The main job on embedded defaults: install, pretrain the cpu-demo preset on Fashion-MNIST,
# then kNN + linear probe on the full test set, beside the same network at random init.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/cpu-demo}
PRESET=${PRESET:-cpu-demo}
.venv/bin/simsiam pretrain --preset "$PRESET" --out "$OUT" "$@"
echo "==> probing the pretrained backbone"
.venv/bin/simsiam probe --checkpoint "$OUT/checkpoint.pt" | tee "$OUT/probe.json"
echo "==> probing the same architecture at random init (baseline)"
.venv/bin/simsiam probe --checkpoint "$OUT/checkpoint.pt" --random-init | tee "$OUT/probe-random-init.json"
