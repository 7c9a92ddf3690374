# The two commands of the README: `make run` (the default pipeline) and `make test` (the test suite).
# Each creates or updates .venv from this project's own files first, and runs with .venv/bin first on PATH (the
# rules call the `amcore` CLI), so neither needs an activated venv. Another config, extra Snakemake arguments:
#   make run CONFIG=config/leaveout/eb.yaml ARGS='--config data=my.npz'
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CORES ?= 2
CONFIG ?= config/config.yaml
ARGS ?=
export PATH := $(BIN):$(PATH)

.PHONY: run test lint install clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check pip==26.3  # pinned: a new pip is no new CI
	# torch first, pinned: the CPU wheel on disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[pipeline,dev]'
	# The peers from their own package (implementation: torchcfm). Without its dependencies: the matchers amcore
	# uses need only torch and POT; torchdyn would pull torchvision, lightning and jupyter.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps torchcfm==1.0.7
	touch $@

install: $(VENV)/.installed

# The Snakefile reads config/config.yaml itself: named again, Snakemake said it was "extended" by itself (audit 33).
# ARGS before --configfile, which takes several values: a target file after it was read as a second config (audit 83).
run: install
	$(BIN)/snakemake --cores $(CORES) $(ARGS) $(if $(filter-out config/config.yaml,$(CONFIG)),--configfile $(CONFIG))

# The tests spend most of their time starting real processes (Snakemake, amcore jobs, mlflow servers): two at a time
# (pytest-xdist, one per core) took 497 s where one at a time took 915 (docs/benchmarks.md). CORES=1: one at a time.
test: install
	$(BIN)/python -m pytest -m "not slow" -q --durations=15 $(if $(filter-out 1,$(CORES)),-n $(CORES))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake report.html
