# Two commands do all setup on a fresh clone:
#   make demo   — install what the demo needs (.[worker]), start a local broker + worker,
#                 compute the bundled example strokes
#   make test   — install with dev extras, run ruff (lint + format), mypy and pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Byte-compile the package as pip does for a regular install: an editable one is imported
# from source, and where PYTHONDONTWRITEBYTECODE is set every process (each worker's
# start, each test's subprocess) would compile ~100 modules again (~0.15 s).
COMPILE := $(PY) -m compileall -q zmq_ik broker worker client ik benchmarks

.PHONY: demo test lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip

$(VENV)/.installed-worker: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[worker]"
	$(COMPILE) >/dev/null
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
	$(COMPILE) >/dev/null
	$(PY) -m pytest

bench: $(VENV)/.installed-dev
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
