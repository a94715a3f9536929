#!/usr/bin/env bash
# The wheels a GPU machine without internet lacks (it has torch, lightning, torchmetrics, timm,
# tifffile, opencv, numpy: never carried) at uv.lock's versions into .whl/, for gpu_check.sh.
# Run where PyPI is reachable, after `make install`. PYTHON_VERSION (the machine's, default 3.12),
# WHEELS (the folder), HAVE (`python3 -m pip freeze` of the machine: what it has is left out).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
WHEELS=${WHEELS:-.whl}
HAVE=${HAVE:-/dev/null}
# What training, prediction and the check's tests import beyond the machine's packages.
PACKAGES="hydra-core omegaconf antlr4-python3-runtime segmentation-models-pytorch albumentations
          albucore pydantic pydantic-core annotated-types typing-inspection stringzilla simsimd
          scipy imageio monai matplotlib contourpy cycler fonttools kiwisolver
          pyparsing python-dateutil tzdata pytest pluggy iniconfig pygments cloudpickle"
# name==version as uv.lock resolves it for that Python on Linux x86_64, but for those in $HAVE.
mkdir -p "$WHEELS"
.venv/bin/python - "$PYTHON_VERSION" "$HAVE" $PACKAGES > "$WHEELS/requirements.txt" <<'EOF'
import re, sys, tomllib
from packaging.markers import Marker
python, have, names = sys.argv[1], sys.argv[2], sys.argv[3:]
canon = lambda name: re.sub(r"[-_.]+", "-", name).lower()
present = {canon(re.split(r"[=<>@ ]", line)[0]) for line in open(have) if line.strip()}
env = {"python_version": python, "python_full_version": f"{python}.0",
       "sys_platform": "linux", "platform_machine": "x86_64"}
lock = tomllib.load(open("uv.lock", "rb"))["package"]
fits = lambda p: any(Marker(m).evaluate(env) for m in p.get("resolution-markers", ["python_version > '0'"]))
for name in names:
    if canon(name) in present:
        print(f"# {name}: the machine has it", file=sys.stderr)
        continue
    print(name + "==" + next(p["version"] for p in lock if p["name"] == name and fits(p)))
EOF
mapfile -t specs < "$WHEELS/requirements.txt"
binary=() source=()
for spec in "${specs[@]}"; do  # antlr4-python3-runtime (hydra's parser) exists as a source archive only
    if [[ $spec == antlr4-python3-runtime==* ]]; then source+=("$spec"); else binary+=("$spec"); fi
done
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp "${PLATFORMS[@]/#/--platform=}" -d "$WHEELS" "${binary[@]}"
[ ${#source[@]} -eq 0 ] || python3 -m pip wheel -q --no-deps -w "$WHEELS" "${source[@]}"
du -sh "$WHEELS"
