# Two entry points, both from a fresh clone with only Python 3.11+:
#   make run    install into .venv and serve the workbench (every view) on the default workspace (grace.duckdb)
#   make test   install into .venv and run every test (unit, property, fault, notebook)
# Screenshots from the browser tests go to build/screenshots; `make screenshots` refreshes docs/screenshots.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run lab test lint bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/grace serve

lab: $(STAMP)
	$(BIN)/grace lab

lint: $(STAMP)
	$(BIN)/ruff check grace_core tests benchmarks apps
	$(BIN)/ruff format --check grace_core tests benchmarks apps

test: $(STAMP) lint
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env

bench: $(STAMP)
	$(BIN)/grace bench

screenshots: $(STAMP)
	GRACE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/ui/test_app.py tests/ui/test_app_round2.py \
		-q -k "not voila"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
