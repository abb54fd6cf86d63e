# Two commands set everything up and check it: `make install`, then `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned versions that resolve together; on a GPU machine the same torch pin is the CUDA build.
CONSTRAINTS ?= constraints.txt

.PHONY: install lint test test-all search clean

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c $(CONSTRAINTS) -e ".[dev]"
	@echo "installed: run 'make test', or '$(BIN)/ecad search' for the offline demo search"

lint:
	$(BIN)/ruff check ecad tests benchmarks
	$(BIN)/ruff format --check ecad tests benchmarks

test:
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -rs

test-all:
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m "slow or not slow"

search:
	HF_HUB_OFFLINE=1 $(BIN)/ecad search

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info build
