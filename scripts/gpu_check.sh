#!/usr/bin/env bash
# GPU check in under 10 minutes on a machine with a CUDA GPU (make gpu-check): the GPU-marked
# tests, the training-speed and augmentation benchmarks at 256 px and an 8-epoch
# experiment=reference run, ending with one table of figures, also written as JSON.
#   scripts/gpu_check.sh [JSON]             the check (JSON defaults to <check dir>/gpu_check.json)
#   scripts/gpu_check.sh --pack             where PyPI and the data are: the wheels a machine without
#                                           internet lacks into .whl/ (scripts/gpu_wheels.sh) and
#                                           DATA into .gpudata/lgg.tar.xz; carry both with the checkout
#   scripts/gpu_check.sh --rehearse [JSON]  every step on the CPU at tiny sizes, under a fresh Python
#                                           holding only torch, lightning, torchmetrics, timm,
#                                           tifffile and opencv (uv.lock's versions) plus the carried
#                                           wheels, on a 3-patient archive (make gpu-check-rehearsal)
# Environment: DATA (a kaggle_3m-layout folder, or for the check a .tar.xz of one; default
# ../shared/data/lgg, for the check .gpudata/lgg.tar.xz where it exists), PY (default .venv/bin/python if present, else python3),
# GPU_CHECK_DIR (where the logs go), PATIENTS (--pack: keep the first N patients), PINS
# (--rehearse: other versions for the bare Python, e.g. PINS="lightning==2.5.0 torchmetrics==1.4.0";
# then only torch and torchvision keep uv.lock's versions),
# CHANNELS_LAST=true / COMPILE=true (those training settings, conf/train.yaml, in the run).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=check
case "${1:-}" in --pack | --rehearse) MODE=${1#--} && shift ;; esac
STAMP=$(date +%Y%m%d-%H%M%S)
if [ "$MODE" = check ] && [ -f .gpudata/lgg.tar.xz ]; then DATA=${DATA:-.gpudata/lgg.tar.xz}; fi
DATA=${DATA:-../shared/data/lgg}

pack_data() {  # <data root> <archive> [number of patients]: the patient folders as one .tar.xz
    local root=${1%/} archive=$2 patients
    [ -d "$root" ] || { echo "gpu-check: data root $root not found; set DATA=<kaggle_3m-layout folder>" >&2; exit 2; }
    mapfile -t patients < <(find "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | head -n "${3:-100000}")
    mkdir -p "$(dirname "$archive")"
    tar cJf "$archive.part" -C "$(dirname "$root")" "${patients[@]/#/$(basename "$root")/}"
    mv "$archive.part" "$archive"
    echo "gpu-check: ${#patients[@]} patients of $root in $archive ($(du -h "$archive" | cut -f1))"
}

if [ "$MODE" = pack ]; then
    bash scripts/gpu_wheels.sh
    pack_data "$DATA" .gpudata/lgg.tar.xz "${PATIENTS:-}"
    grep -qxF /.gpudata/ .git/info/exclude 2>/dev/null || echo /.gpudata/ >> .git/info/exclude
    echo "gpu-check: carry .whl/ and .gpudata/ with the checkout; there run PY=python3 scripts/gpu_check.sh"
    exit 0
fi

if [ "$MODE" = rehearse ]; then
    # The GPU machine's situation, built here: a bare Python from uv's cache (or PyPI), the
    # wheels scripts/gpu_wheels.sh carries for that Python, and a small data archive.
    UV=${UV:-$(command -v uv || echo .tools/bin/uv)}
    BARE=.cache/gpu-check-rehearsal${PINS:+-$(echo "$PINS" | tr ' =' '_-')}
    mkdir -p "$BARE"
    "$UV" export -q --frozen --no-hashes --no-dev --no-emit-project --no-header -o "$BARE/constraints.txt"
    if [ -n "${PINS:-}" ]; then  # other versions: uv.lock keeps only torch and torchvision
        sed -i -n '/^torch==/p; /^torchvision==/p' "$BARE/constraints.txt"
    fi
    rm -rf "$BARE/python"
    "$UV" venv -q --seed --python .venv/bin/python "$BARE/python"
    "$UV" pip install -q --python "$BARE/python/bin/python" -c "$BARE/constraints.txt" \
        torch lightning torchmetrics timm tifffile opencv-python-headless ${PINS:-}
    PY=$BARE/python/bin/python
    PYTHON_VERSION=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        WHEELS=$BARE/whl bash scripts/gpu_wheels.sh
    WHEELS=$BARE/whl
    if [ ! -d "$DATA" ]; then  # no real patients beside the checkout: synthetic ones
        echo "gpu-check: $DATA not found; rehearsing on synthetic patients"
        rm -rf "$BARE/synthetic"
        .venv/bin/python -m brainseg.data.synthetic --out "$BARE/synthetic/lgg" --patients 3 --size 64
        DATA=$BARE/synthetic/lgg
    fi
    pack_data "$DATA" "$BARE/lgg.tar.xz" 3
    DATA=$BARE/lgg.tar.xz DEVICE=cpu
    OUT=${GPU_CHECK_DIR:-outputs/gpu-check/$STAMP-rehearsal}
    # Tiny sizes: the same steps and code paths, minutes on two CPU cores.
    TESTS_ENV=(BRAINSEG_TEST_DEVICE=cpu)
    SPEED_ARGS=(--size 32 --steps 2 --warmup 1 --batch-sizes 4 --workers 0 --no-compile
                --override data.split.n_val=1)
    AUGMENT_ARGS=(--size 32 --batch-sizes 4 --repeats 2)
    RUN_ARGS=(trainer=cpu trainer.max_epochs=1 data.split.n_val=1 data.preprocess.image_size=32
              data.batch_size=4 trainer.limit_train_batches=3)
    LIMITS=(600 600 600 600)
else
    PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    WHEELS=.whl DEVICE=cuda
    OUT=${GPU_CHECK_DIR:-outputs/gpu-check/$STAMP}
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu-check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
        exit 1
    fi
    TESTS_ENV=()
    SPEED_ARGS=(--size 256 --steps 20 --warmup 5)
    AUGMENT_ARGS=(--size 256 --batch-sizes 16 64 256 --repeats 50)
    RUN_ARGS=(trainer=gpu trainer.max_epochs=8)
    # Seconds per step, so that one slow step cannot keep the table from printing within 10 minutes.
    LIMITS=(90 270 45 150)
fi
JSON=${1:-$OUT/gpu_check.json}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

# Carried wheels go into a side folder ahead on PYTHONPATH; the machine's torch, torchvision,
# lightning, torchmetrics, timm and numpy are never replaced, whatever was carried.
if [ "$PY" != .venv/bin/python ] && [ -d "$WHEELS" ]; then
    wheels=()
    for wheel in "$WHEELS"/*.whl; do
        case "$(basename "$wheel")" in
            torch-* | torchvision-* | lightning-* | pytorch_lightning-* | torchmetrics-* | timm-* | numpy-*)
                echo "gpu-check: $(basename "$wheel") left out: the machine's own build is used" ;;
            *) wheels+=("$wheel") ;;
        esac
    done
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$OUT/site" "${wheels[@]}"
    export PYTHONPATH="$PWD/$OUT/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" scripts/gpu_check_report.py versions "$OUT"
if [[ "$DATA" == *.tar.xz && -f "$DATA" ]]; then  # data carried as one archive
    tar xJf "$DATA" -C "$OUT"
    DATA="$OUT/$(tar tJf "$DATA" | awk -F/ 'NR == 1 {print $1}')"  # its top folder (awk reads it all)
fi
[ -d "$DATA" ] || { echo "gpu-check: data root $DATA not found; set DATA=<kaggle_3m-layout folder or .tar.xz of one>" >&2; exit 2; }
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

FAILED=()
step() {  # <limit s> <log name> <command...>: a failing or overrunning step is noted, the rest go on
    local limit=$1 log=$2
    shift 2
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$log" || FAILED+=("$log (exit ${PIPESTATUS[0]}; 124: ran past $limit s)")
}

echo "== 1/4 GPU-marked tests on $DEVICE"
step "${LIMITS[0]}" tests.txt env "${TESTS_ENV[@]}" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py

echo "== 2/4 training speed ($DATA)"
step "${LIMITS[1]}" train_speed.txt "$PY" bench/train_speed.py --root "$DATA" --device "$DEVICE" \
    "${SPEED_ARGS[@]}" --cache-dir "$OUT/cache" --json "$OUT/train_speed.json"

echo "== 3/4 kornia vs affine_grid/grid_sample augmentation"
step "${LIMITS[2]}" device_augmentation.txt "$PY" bench/device_augmentation.py --device "$DEVICE" \
    "${AUGMENT_ARGS[@]}" --json "$OUT/device_augmentation.json"

echo "== 4/4 experiment=reference on $DATA"
SMI=
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/nvidia_smi.csv" &
    SMI=$!
else
    echo "gpu-check: no nvidia-smi here: GPU utilisation is not sampled"
fi
step "${LIMITS[3]}" train.log "$PY" train.py experiment=reference "${RUN_ARGS[@]}" "data.root=$DATA" \
    "data.cache_dir=$OUT/cache" "hydra.run.dir=$OUT/run" \
    "channels_last=${CHANNELS_LAST:-false}" "compile=${COMPILE:-false}" \
    +callbacks.speed._target_=bench.speed.TrainingSpeed
[ -z "$SMI" ] || kill "$SMI" 2>/dev/null || true

"$PY" scripts/gpu_check_report.py summary "$OUT" "$JSON" || FAILED+=("the summary")
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'gpu-check: failed: %s\n' "${FAILED[@]}" >&2
    echo "gpu-check: logs in $OUT" >&2
    exit 1
fi
echo "gpu-check: done; logs in $OUT"
