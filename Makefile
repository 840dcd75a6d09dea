# One task runner for people and CI (STYLE: fmt, lint, proto, test, bench).
# Every target creates the virtual environment it needs, so a fresh checkout needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP_BASE := $(VENV)/.installed
STAMP_TEST := $(VENV)/.installed-test
STAMP_DEV := $(VENV)/.installed-dev
PYTEST_ARGS ?= -n 2

.PHONY: demo test lint fmt proto proto-check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_BASE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(STAMP_DEV): pyproject.toml $(STAMP_TEST)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## demo: install haz (no test extras) and run the main job on the bundled example workspace
## (twice: the second run restores every task from the local cache)
demo: $(STAMP_BASE)
	cd examples/acme && ../../$(BIN)/haz check --workspace \
		&& ../../$(BIN)/haz run --workspace \
		&& ../../$(BIN)/haz run --workspace

## test: install (test + dev extras), lint (ruff, mypy --strict, import contracts), then run the whole test
## suite: what CI runs
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP_DEV)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP_DEV)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

proto: $(STAMP_TEST)
	$(BIN)/python proto/generate.py

proto-check: $(STAMP_TEST)
	$(BIN)/python proto/generate.py --check

bench: $(STAMP_TEST)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
