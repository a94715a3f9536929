#!/usr/bin/env bash
# Wheels for a GPU machine without internet access, at uv.lock's versions, into .whl/ (git-ignored).
# For a python3 (3.12, x86_64 Linux) that already has torch, lightning, torchmetrics, timm, tifffile,
# opencv, scipy, matplotlib, imageio and tensorboard: the rest is fetched here, on a machine with
# internet access, and carried with the checkout (docs/gpu.md: GPU check). Run once: scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(hydra-core omegaconf segmentation-models-pytorch albumentations albucore pydantic pydantic-core
          annotated-types typing-inspection stringzilla simsimd kornia kornia-rs)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
locked() {  # the version uv.lock pins for a package
    .venv/bin/python -c "import sys, tomllib; print(next(p['version'] for p in tomllib.load(open('uv.lock', 'rb'))['package'] if p['name'] == sys.argv[1]))" "$1"
}
mkdir -p .whl
specs=()
for name in "${PACKAGES[@]}"; do specs+=("$name==$(locked "$name")"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]/#/--platform=}" -d .whl "${specs[@]}"
# antlr4-python3-runtime (hydra's parser) is published as a source archive only: build its pure-Python wheel
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(locked antlr4-python3-runtime)"
du -sh .whl
