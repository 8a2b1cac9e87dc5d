# `make test` and `make demo` create the environment on first use, then run.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: env test test-slow test-all demo lint mutation clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a CPU build lies on disk here; any unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,s3,gcs]'
	touch $(STAMP)

test: env
	$(PY) -m pytest -q -m "not slow"

test-slow: env
	$(PY) -m pytest -q -m slow

test-all: env
	$(PY) -m pytest -q

# The embedded default end to end (synthetic data, tiny model, Ray, ephemeral Prefect); no server/GPU/network.
demo: env
	$(VENV)/bin/smite demo --out demo_out

lint: env
	$(VENV)/bin/ruff check smite_ops pipeline flows tests benchmarks

# Mutation score of the method modules against their own fast tests (mutmut; hours for all, not in CI).
# MODULES="voting losses" picks some; JOBS=N tests N mutants at a time.
mutation: env
	$(PY) benchmarks/mutation.py --jobs $(or $(JOBS),1) $(MODULES)

clean:
	rm -rf $(VENV) demo_out .pytest_cache
