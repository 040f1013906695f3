# The two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test lint setup db demo bench soak clean

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

db: setup
	$(BIN)/reddit-dagster db upgrade

run: db
	$(BIN)/reddit-dagster run

demo: db
	$(BIN)/reddit-dagster run --demo

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -m "not soak" $(PYTEST_ARGS)

soak: setup
	$(BIN)/pytest -m soak -s $(PYTEST_ARGS)

bench: db
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .data build *.egg-info
