# `make demo` and `make test` each set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo reproduce retrain test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 bash scripts/demo.sh

# both worlds' published comparisons (paper Table 1 layout, Table 4 / Table 8 views, figures) on the weights
# shipped in zoo_weights/ (no training) -> results/evidence/<world>/, to compare with docs/evidence/<world>/
reproduce: setup
	HF_HUB_OFFLINE=1 $(BIN)/adamms zoo tasks --out results/tasks
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/adamms compare docs/evidence/disjoint/config.yaml
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/adamms compare docs/evidence/generalists/config.yaml

# retrain both worlds' zoos (~5 min each, one thread) and say whether they reproduce the shipped weights
retrain: setup
	HF_HUB_OFFLINE=1 $(BIN)/adamms zoo build --world disjoint --force
	HF_HUB_OFFLINE=1 $(BIN)/adamms zoo build --world generalists --force

# one line per test file with a running count ([ 12/300]), then the 15 slowest tests (the full run takes a while)
PYTEST_PROGRESS := -o console_output_style=count --durations=15 --durations-min=1
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_PROGRESS)

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_merge.py
