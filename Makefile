# The two commands: `make run` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

NPM    ?= npm
# npm ci writes this file last, so it is newer than the lock file once an install completed.
WEB_STAMP := web/node_modules/.package-lock.json

.PHONY: run test lint typecheck contracts pytest bench clean web

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

## The player libraries for the web pages (hls.js, mpegts.js), from the npm registry.
web: $(WEB_STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json
	@command -v $(NPM) >/dev/null 2>&1 || { \
	    echo "npm is missing: the web player needs hls.js and mpegts.js from the npm registry." >&2; \
	    echo "Install Node.js with npm (Debian: apt-get install nodejs npm), then run make again." >&2; \
	    exit 1; }
	$(NPM) ci --prefix web --no-audit --no-fund
	@touch $(WEB_STAMP)

## Create the virtual environment, install, and start a single-box node on embedded defaults.
run: $(STAMP) web
	$(BIN)/ripplecast serve

## Install what the tests need and run ruff, mypy, import-linter and pytest.
test: $(STAMP) lint typecheck contracts pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP) web
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.fanout --help

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache web/node_modules
