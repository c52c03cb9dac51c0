# Two commands do all setup on a fresh clone:
#   make demo   — install what the demo needs (.[worker]), start a local broker + worker,
#                 compute the bundled example strokes
#   make test   — install with dev extras, run ruff (lint + format), mypy and pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip

$(VENV)/.installed-worker: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[worker]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed-worker
	$(VENV)/bin/zmq-ik demo

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed-dev
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
