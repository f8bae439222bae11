#!/usr/bin/env bash
# Install what simsiam-pipeline needs on a fresh Debian machine: Fashion-MNIST from Debian's
# dataset-fashion-mnist, a Python 3.11 venv in .venv, and the package (+ test extras).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  echo "==> installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
# A fresh .venv takes about 7.2 GB (torch's CUDA build); say so before pip fails half-way with ENOSPC.
NEED_GB=${SIMSIAM_SETUP_NEED_GB:-8}
if [ ! -x .venv/bin/python ]; then
  free_gb=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1048576 ))
  if [ "$free_gb" -lt "$NEED_GB" ]; then
    echo "error: $(pwd) has ${free_gb} GB free; a new .venv needs about ${NEED_GB} GB (torch + CUDA wheels)." >&2
    echo "       Free some disk (old clones, /tmp) and run this again." >&2
    exit 1
  fi
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch/torchvision are pinned in pyproject.toml; pip takes them from this machine's local disk.
if ! .venv/bin/python -c "import simsiam, torch, torchvision, pytest" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  echo "==> installing simsiam-pipeline into .venv (first time: a few minutes)"
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
