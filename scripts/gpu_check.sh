#!/usr/bin/env bash
# GPU check in under 10 minutes on a machine with a CUDA GPU (make gpu-check): the GPU-marked
# tests, the training-speed and augmentation benchmarks at 256 px, and a short experiment=reference
# run on the data root with trainer=gpu, printing samples/s, data-wait share, GPU utilisation and memory.
#   DATA=../shared/data/lgg PY=.venv/bin/python scripts/gpu_check.sh   (DATA may be a .tar.xz of the data root)
# CHANNELS_LAST=true / COMPILE=true switch on those training settings (conf/train.yaml) in the run.
# On a GPU machine without internet access or the project's virtual environment: PY=python3,
# with the missing wheels carried in .whl/ (scripts/gpu_wheels.sh); they are installed into a
# temporary folder (docs/gpu.md: GPU check).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/lgg}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${GPU_CHECK_DIR:-outputs/gpu-check/$(date +%Y%m%d-%H%M%S)}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
    exit 1
fi
if [ "$PY" != ".venv/bin/python" ] && [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/brainseg-site .whl/*.whl
    export PYTHONPATH="/tmp/brainseg-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
mkdir -p "$OUT"
if [[ "$DATA" == *.tar.xz && -f "$DATA" ]]; then  # the data root carried as one archive
    tar xJf "$DATA" -C "$OUT" && DATA="$OUT/$(tar tJf "$DATA" | head -1 | cut -d/ -f1)"
fi
[ -d "$DATA" ] || { echo "gpu-check: data root $DATA not found; set DATA=<kaggle_3m-layout folder or .tar.xz of one>" >&2; exit 2; }
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== 1/4 GPU-marked tests"
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py

echo "== 2/4 training speed, 256 px ($DATA)"
"$PY" bench/train_speed.py --root "$DATA" --device cuda --size 256 --steps 20 --warmup 5 \
    --cache-dir "$OUT/cache" | tee "$OUT/train_speed.txt"

echo "== 3/4 kornia vs affine_grid/grid_sample augmentation, 256 px"
"$PY" bench/device_augmentation.py --device cuda --size 256 --batch-sizes 16 64 256 --repeats 50 \
    | tee "$OUT/device_augmentation.txt"

echo "== 4/4 experiment=reference, trainer=gpu, 8 epochs on $DATA"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/nvidia_smi.csv" &
SMI=$!
"$PY" train.py experiment=reference trainer=gpu trainer.max_epochs=8 "data.root=$DATA" \
    "data.cache_dir=$OUT/cache" "hydra.run.dir=$OUT/run" \
    "channels_last=${CHANNELS_LAST:-false}" "compile=${COMPILE:-false}" \
    +callbacks.speed._target_=bench.speed.TrainingSpeed 2>&1 | tee "$OUT/train.log" \
    | grep -E "samples/s|best val/dsc_volume|error" || true
kill "$SMI" 2>/dev/null || true
awk -F', ' '$1 > 0 {n++; u += $1; if ($2 > m) m = $2} END {if (n) printf "GPU utilisation while busy (nvidia-smi, 0.5 s samples): mean %.0f%% over %d samples; memory used up to %d MiB\n", u / n, n, m}' "$OUT/nvidia_smi.csv"
echo "gpu-check: done; logs in $OUT"
