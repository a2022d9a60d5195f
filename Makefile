# `make demo` and `make test` each set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo reproduce test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 bash scripts/demo.sh

# the full zoo comparison (paper Table 1 layout, Table 4 / Table 8 views, figures) -> results/compare_zoo/
reproduce: setup
	HF_HUB_OFFLINE=1 $(BIN)/adamms zoo build
	HF_HUB_OFFLINE=1 $(BIN)/adamms zoo tasks
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/adamms compare configs/zoo.yaml

# one line per test file with a running count ([ 12/300]), then the 15 slowest tests (the full run takes a while)
PYTEST_PROGRESS := -o console_output_style=count --durations=15 --durations-min=1
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_PROGRESS)

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_merge.py
