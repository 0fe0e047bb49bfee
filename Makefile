# Set-up and the two everyday commands. `make quick` and `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU build on this project's machines; any torch>=2.4 works (e.g. TORCH=torch for the
# newest release with CUDA).
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: quick quick-seed full test lint bench install

# --no-compile: Python compiles the modules a run imports when it first imports them, not
# every module of every package at install (30 s less on a clean clone, docs/log/26-speed.md)
$(BIN)/bltlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile "$(TORCH)"
	$(BIN)/pip install -q --no-compile -e ".[dev]"
	touch $@

install: $(BIN)/bltlab

quick: $(BIN)/bltlab
	$(BIN)/bltlab run --quick

quick-seed: $(BIN)/bltlab
	$(BIN)/bltlab run --quick --profile seed

full: $(BIN)/bltlab
	$(BIN)/bltlab run --full

test: $(BIN)/bltlab
	$(BIN)/python -m pytest -n auto

lint: $(BIN)/bltlab
	$(BIN)/ruff check src tests bench scripts run_experiments.py analyze_results.py

bench: $(BIN)/bltlab
	$(BIN)/python bench/train_throughput.py --json
