# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PY := .venv/bin/python
DATA ?= ../shared/data/lgg

.PHONY: install demo test test-fast bench bench-train gpu-check gpu-check-rehearsal lint clean

install: .venv/.installed

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install -q uv==$(UV_VERSION)

# uv.lock pins every package; uv's cache (~/.cache/uv) makes a second install take seconds.
# Bytecode is compiled once at install, so no process start compiles torch, Lightning or MONAI
# again (where PYTHONDONTWRITEBYTECODE is set, every start would: about 10 s each).
.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

data/synthetic: | install
	$(PY) -m brainseg.data.synthetic --out data/synthetic

demo: install data/synthetic
	$(PY) train.py experiment=demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

# The training loader's samples/s and data wait at 128 and 256 px with 0, 2 and 4 workers
# (docs/benchmarks.md; BENCH_ARGS: e.g. --runs 1).
bench: install
	$(PY) -m bench.data_pipeline --root $(DATA) $(BENCH_ARGS)

# Training samples/s with channels_last off and on at 128 and 256 px (BENCH_ARGS: e.g. --pairs 1).
bench-train: install
	$(PY) -m bench.train_speed --root $(DATA) $(BENCH_ARGS)

# On a machine with a CUDA GPU, under 10 minutes; exits with one line where there is none (docs/gpu.md: GPU check).
gpu-check:
	bash scripts/gpu_check.sh

# Every step of gpu-check on the CPU at tiny sizes, under a fresh Python with only the packages a
# GPU machine brings plus the carried wheels (needs uv and PyPI or uv's cache; under 3 minutes).
gpu-check-rehearsal: install
	UV=$(UV) bash scripts/gpu_check.sh --rehearse

# Every Python path of the project: the lint rules (pyproject: [tool.ruff]) and ruff's formatting.
PY_PATHS := brainseg tests train.py predict.py bench hydra_plugins scripts

lint: install
	$(UV) run --frozen ruff check $(PY_PATHS)
	$(UV) run --frozen ruff format --check $(PY_PATHS)

clean:
	rm -rf .cache outputs .pytest_cache
