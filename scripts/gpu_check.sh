#!/usr/bin/env bash
# GPU check (make gpu-check; docs/gpu.md): the GPU-marked tests, then training samples/s with
# channels_last off and on, in one table (also as JSON: $1, default <logs>/gpu_check.json).
# --pack: the wheels a GPU machine without internet lacks into .whl/, DATA into .gpudata/;
# --rehearse: every step on the CPU at tiny sizes under a bare Python (make gpu-check-rehearsal).
# Environment: DATA (kaggle_3m-layout folder or .tar.xz of one), PY, GPU_CHECK_DIR (the logs),
# PATIENTS (--pack: the first N), PINS (--rehearse: other versions, e.g. "lightning==2.5.0").
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=check
case "${1:-}" in --pack | --rehearse) MODE=${1#--} && shift ;; esac
[ "$MODE" != check ] || [ ! -f .gpudata/lgg.tar.xz ] || DATA=${DATA:-.gpudata/lgg.tar.xz}
DATA=${DATA:-../shared/data/lgg}

pack_data() {  # <data root> <archive> [number of patients]: the patient folders as one .tar.xz
    local root=${1%/} archive=$2 patients
    [ -d "$root" ] || { echo "gpu-check: data root $root not found; set DATA" >&2; exit 2; }
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

if [ "$MODE" = rehearse ]; then  # the GPU machine's situation, built here
    UV=${UV:-$(command -v uv || echo .tools/bin/uv)}
    BARE=.cache/gpu-check-rehearsal${PINS:+-$(echo "$PINS" | tr ' =' '_-')}
    mkdir -p "$BARE"
    "$UV" export -q --frozen --no-hashes --no-dev --no-emit-project --no-header -o "$BARE/constraints.txt"
    [ -z "${PINS:-}" ] || sed -i -n '/^torch==/p; /^torchvision==/p' "$BARE/constraints.txt"
    rm -rf "$BARE/python"
    "$UV" venv -q --seed --python .venv/bin/python "$BARE/python" && "$UV" pip install -q --python "$BARE/python/bin/python" -c "$BARE/constraints.txt" \
        torch lightning torchmetrics timm tifffile opencv-python-headless ${PINS:-}
    PY=$BARE/python/bin/python WHEELS=$BARE/whl
    PYTHON_VERSION=$("$PY" -c 'import sys; print(sys.version[:4])') WHEELS=$WHEELS bash scripts/gpu_wheels.sh
    if [ ! -d "$DATA" ]; then
        echo "gpu-check: $DATA not found; rehearsing on synthetic patients"
        rm -rf "$BARE/synthetic"
        .venv/bin/python -m brainseg.data.synthetic --out "$BARE/synthetic/lgg" --patients 3 --size 64
        DATA=$BARE/synthetic/lgg
    fi
    pack_data "$DATA" "$BARE/lgg.tar.xz" 3
    DATA=$BARE/lgg.tar.xz DEVICE=cpu OUT=${GPU_CHECK_DIR:-outputs/gpu-check/$(date +%Y%m%d-%H%M%S)-rehearsal}
    TESTS_ENV=(BRAINSEG_TEST_DEVICE=cpu)
    SPEED_ARGS=(--sizes 32 --pairs 1 --steps 1 --batch 4 --set data.split.n_val=1)
else
    PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
    WHEELS=.whl DEVICE=cuda OUT=${GPU_CHECK_DIR:-outputs/gpu-check/$(date +%Y%m%d-%H%M%S)}
    "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null || {
        echo "gpu-check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2; exit 1; }
    TESTS_ENV=()
    SPEED_ARGS=(--precision 16-mixed --steps 20 --warmup 5)  # trainer=gpu's precision
fi
JSON=${1:-$OUT/gpu_check.json}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Carried wheels go into a folder ahead on PYTHONPATH; the machine's own torch & co. stay.
if [ "$PY" != .venv/bin/python ] && [ -d "$WHEELS" ]; then
    mapfile -t wheels < <(ls "$WHEELS"/*.whl | grep -Ev \
        '/(torch|torchvision|lightning|pytorch_lightning|torchmetrics|timm|numpy)-[^/]*$')
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$OUT/site" "${wheels[@]}"
    export PYTHONPATH="$PWD/$OUT/site:$PYTHONPATH"
fi
"$PY" scripts/gpu_check_report.py versions "$OUT"
if [[ "$DATA" == *.tar.xz && -f "$DATA" ]]; then  # data carried as one archive: its top folder
    tar xJf "$DATA" -C "$OUT"
    DATA="$OUT/$(tar tJf "$DATA" | awk -F/ 'NR == 1 {print $1}')"
fi
[ -d "$DATA" ] || { echo "gpu-check: data root $DATA not found; set DATA" >&2; exit 2; }
! command -v nvidia-smi > /dev/null || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

FAILED=()
echo "== 1/2 GPU-marked tests on $DEVICE"
env "${TESTS_ENV[@]}" timeout 300 "$PY" -m pytest -o addopts=-ra -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 \
    | tee "$OUT/tests.txt" || FAILED+=("the GPU-marked tests (tests.txt)")
echo "== 2/2 training speed, channels_last off and on ($DATA)"
timeout 300 "$PY" -m bench.train_speed --root "$DATA" --device "$DEVICE" "${SPEED_ARGS[@]}" \
    --cache-dir "$OUT/cache" --json "$OUT/train_speed.json" 2>&1 | tee "$OUT/train_speed.txt" \
    || FAILED+=("the training speed (train_speed.txt)")
"$PY" scripts/gpu_check_report.py summary "$OUT" "$JSON" || FAILED+=("the summary")
[ ${#FAILED[@]} -eq 0 ] || { echo "gpu-check: failed: ${FAILED[*]}; logs in $OUT" >&2; exit 1; }
echo "gpu-check: done; logs in $OUT"
