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

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_merge.py
