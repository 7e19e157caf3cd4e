# The set-up commands (see README): `make demo` runs the whole pipeline with a simulated ward,
# `make test` runs the tests, `make up` runs only the broker and database. Each creates the
# virtualenv in .venv and installs what is needed on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TIMESCALE_DIR := tests/integration/timescale

.PHONY: demo up test lint install install-dev clean

demo: $(VENV)/.installed
	$(BIN)/icu demo $(DEMO_ARGS)

up: $(VENV)/.installed
	$(BIN)/icu up

test: $(VENV)/.installed-dev
	@if command -v npm >/dev/null 2>&1 && [ ! -d $(TIMESCALE_DIR)/node_modules ]; then \
		echo "installing the TimescaleDB test engine (npm ci)"; \
		(cd $(TIMESCALE_DIR) && npm ci --no-audit --no-fund --loglevel=error) || echo "npm ci failed: TimescaleDB tests will be skipped"; \
	fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/icu schemas export --check
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) $(TIMESCALE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
