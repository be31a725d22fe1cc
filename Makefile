# fsae: the two commands a newcomer runs (see README.md).
#
#   make test   create .venv, install torch + fsae (building the C++/CUDA extension), run ruff and pytest
#   make demo   the same setup, then the main job on the toy dataset: write it, train PPC + FSAE on the CPU
#
# The CUDA kernels are compiled whenever a CUDA toolkit is found (CUDA_HOME, default /usr/local/cuda);
# they run only on a machine with an NVIDIA GPU, where `make test` also runs the CUDA parity tests.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1
TORCHVISION ?= torchvision==0.29.1
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(firstword $(wildcard /usr/local/cuda/bin/nvcc)))
MAX_JOBS ?= 2
export CUDA_HOME MAX_JOBS

STAMP := $(VENV)/.fsae-installed
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')

.PHONY: install test demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install $(TORCH) $(TORCHVISION) ninja "setuptools>=77" wheel
	$(BIN)/pip install --no-build-isolation -e ".[test]"
	$(BIN)/python -c "import fsae.ops; print('fsae build:', fsae.ops.build_info())"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check fsae tests benchmarks setup.py
	$(BIN)/ruff format --check fsae tests benchmarks setup.py

test: lint
	FSAE_REQUIRE_EXTENSION=1 $(BIN)/python -m pytest tests

DEMO_DIR ?= outputs/demo
DEMO_STEPS ?= 150

demo: install
	$(BIN)/python -m fsae.data.toy --root $(DEMO_DIR)/toy/VOC2012
	rm -rf $(DEMO_DIR)/toy_fsae
	$(BIN)/python recipes/voc_fsae.py --config recipes/configs/toy_fsae.yaml --data-root $(DEMO_DIR)/toy/VOC2012 \
		--output-dir $(DEMO_DIR)/toy_fsae --max-steps $(DEMO_STEPS)
	$(BIN)/python benchmarks/bench_ops.py --quick

bench: install
	$(BIN)/python benchmarks/bench_ops.py --json benchmarks/bench_ops_cpu.json

clean:
	rm -rf build $(VENV) fsae/_C*.so *.egg-info
