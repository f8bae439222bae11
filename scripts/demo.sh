#!/usr/bin/env bash
# The main job on embedded defaults, on a fresh Debian machine: install (venv, pip, apt
# dataset-fashion-mnist), then `simsiam run`: start SeaweedFS S3 + an MLflow server on 127.0.0.1,
# and run the Prefect `pipeline` flow: stage Fashion-MNIST, pretrain the cpu-demo preset, kNN +
# linear probe, register the encoder and gate it to `champion`. Services stay up for the MLflow
# UI; `.venv/bin/simsiam down` stops them. Extra arguments go to `simsiam run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PRESET=${PRESET:-cpu-demo}
.venv/bin/simsiam run --preset "$PRESET" "$@"
