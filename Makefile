# Hvelv — two commands on a fresh machine:  make demo  ·  make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the browser tests' JavaScript (tus-js-client, Uppy): npm ci writes the hidden lockfile
JS := tests/browser
JS_STAMP := $(JS)/node_modules/.package-lock.json

.PHONY: demo test lint typecheck check bench clean

$(STAMP): pyproject.toml setup.py src/hvelv/audit/_walk.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(JS_STAMP): $(JS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd $(JS) && npm ci --no-audit --no-fund; \
	else \
		echo "npm not found: the tus-js-client and Uppy browser tests cannot run"; \
	fi

## demo: install, initialise ./.hvelv (SQLite + local disk) with a demo project, and serve on 127.0.0.1:8000
demo: $(STAMP)
	$(BIN)/hvelv demo --home .hvelv --port 8000

## test: install with test extras (and the browser tests' npm packages), run the whole suite
## (HVELV_TEST_DATABASE_URL selects PostgreSQL)
test: $(STAMP) $(JS_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/datasets.py
	$(BIN)/python bench/consent.py
	$(BIN)/python bench/files.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(JS)/node_modules build src/hvelv/audit/_walk.*.so
