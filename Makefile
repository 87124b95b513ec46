# Two entry points, both from a fresh clone with only Python 3.11+:
#   make run    install into .venv and start the workbench on the default workspace (grace.duckdb)
#   make test   install into .venv and run every test (unit, property, fault, notebook)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/grace lab

lint: $(STAMP)
	$(BIN)/ruff check grace_core tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env

bench: $(STAMP)
	$(BIN)/grace bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
