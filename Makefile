# fsae: the two commands a newcomer runs (see README.md).
#
#   make test   create .venv, install torch + fsae (building the C++/CUDA extension), run ruff and pytest
#   make demo   the same setup, then the main job on the toy dataset (CPU, 6-13 min): CAM networks with and
#               without FSAE, pseudo-labels, a segmentation network, OUTPUT/report.md
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
	$(BIN)/pip install --no-build-isolation -e ".[train,crf,tensorboard,sbd,test]"
	$(BIN)/python -c "import fsae.ops; print('fsae build:', fsae.ops.build_info())"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check fsae tests benchmarks recipes setup.py
	$(BIN)/ruff format --check fsae tests benchmarks recipes setup.py

test: lint
	FSAE_REQUIRE_EXTENSION=1 $(BIN)/python -m pytest tests

DEMO_DIR ?= outputs/demo
REPORT_DIR ?= OUTPUT
DEMO_DATA := $(DEMO_DIR)/toy/VOC2012
DEMO_LABELS := --split train --eval --workers 2 --scales 0.5,0.75 --no-progress --threshold 0.3 --miou-over present \
	--scale-resize tensor-bilinear

# The main job end to end on the toy dataset (CPU, 6-13 minutes on 2 cores): CAM networks with and without
# FSAE (the FSAE run branches from the baseline at step 200, where its warm-up ends: the runs are identical up
# to there) -> seeds and CRF pseudo-masks of the train split, evaluated -> a segmentation network trained on
# FSAE's masks, evaluated on val -> OUTPUT/report.md.
demo: install
	$(BIN)/python -m fsae.data.toy --root $(DEMO_DATA) --classes 1,5,9,13,17 --num-train 400
	rm -rf $(DEMO_DIR)/baseline $(DEMO_DIR)/fsae $(DEMO_DIR)/seg
	$(BIN)/python recipes/voc_fsae.py --config recipes/configs/toy_baseline.yaml --data-root $(DEMO_DATA) \
		--output-dir $(DEMO_DIR)/baseline/run
	$(BIN)/python recipes/voc_fsae.py --config recipes/configs/toy_fsae.yaml --data-root $(DEMO_DATA) \
		--output-dir $(DEMO_DIR)/fsae/run --resume $(DEMO_DIR)/baseline/run/checkpoints/step_00000200
	$(BIN)/python recipes/make_pseudo_labels.py --checkpoint $(DEMO_DIR)/baseline/run $(DEMO_LABELS) \
		--output-dir $(DEMO_DIR)/baseline/labels
	$(BIN)/python recipes/make_pseudo_labels.py --checkpoint $(DEMO_DIR)/fsae/run $(DEMO_LABELS) \
		--output-dir $(DEMO_DIR)/fsae/labels
	$(BIN)/python recipes/train_seg.py --config recipes/configs/toy_seg.yaml --data-root $(DEMO_DATA) \
		--pseudo-labels $(DEMO_DIR)/fsae/labels --output-dir $(DEMO_DIR)/seg
	$(BIN)/python recipes/write_report.py --baseline $(DEMO_DIR)/baseline --fsae $(DEMO_DIR)/fsae \
		--seg $(DEMO_DIR)/seg --output $(REPORT_DIR)

bench: install
	$(BIN)/python benchmarks/bench_ops.py --json benchmarks/bench_ops_cpu.json

clean:
	rm -rf build $(VENV) fsae/_C*.so *.egg-info
