#!/usr/bin/env bash
# Run HERE (with network) before a GPU session: puts what bench/gpu_check.sh needs on the bare
# device machine into two git-ignored folders that the device tool's `carry` sends along:
#   .whl/       wheels the device image lacks (pydantic, lightly 1.6 and their needs), for Python 3.12
#   .gpu-data/  the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist)
# Then: device run, carry [".whl", ".gpu-data"], command "bash bench/gpu_check.sh".
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
mkdir -p .whl .gpu-data
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  lightly==1.6.0  # the parts the bench imports need neither hydra nor pytorch-lightning
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu-data/
du -sh .whl .gpu-data
