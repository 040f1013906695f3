# The two commands: `make run` and `make test`. Everything else is set up by them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test lint setup db demo bench soak clean browser

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

# The dashboard's browser test drives Debian's chromium: Playwright cannot download browsers here.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "warning: chromium is missing and could not be installed; the browser test will fail"

test: lint browser
	$(BIN)/pytest -m "not soak" $(PYTEST_ARGS)

soak: setup
	$(BIN)/pytest -m soak -s $(PYTEST_ARGS)

bench: db
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .data build *.egg-info
