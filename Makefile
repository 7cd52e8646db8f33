# The two quick-start commands live here so that they work on a fresh machine: each one
# creates the virtual environment and installs the project first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration install install-runtime clean bench bench-smoke lock

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/pip || $(PYTHON) -m venv --clear $(VENV) || \
	  { echo "Cannot create $(VENV): on Debian/Ubuntu, sudo apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## The app as deployed, for the benchmarks: the versions of constraints.txt without the dev
## extras (their packages change what a serving process loads: schemathesis brings werkzeug,
## which dependency-injector then imports). Editable, so it serves this checkout's code; built
## anew from an empty environment when pyproject.toml or constraints.txt change, so that it
## holds exactly what they list.
RUNTIME_VENV ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed-stamp

install-runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv --clear $(RUNTIME_VENV) || \
	  { echo "Cannot create $(RUNTIME_VENV): on Debian/Ubuntu, sudo apt-get install python3-venv"; exit 1; }
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $(RUNTIME_STAMP)

## constraints.txt anew: the newest versions pyproject.toml allows, resolved in a throwaway
## environment (then `make test`, and commit both files together).
LOCK_VENV := $(VENV)-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '.[dev]'
	sed -n '/^#/p' constraints.txt > constraints.txt.new
	$(LOCK_VENV)/bin/python -m pip freeze --exclude taskflow-link >> constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV) build

## The demo: web app + Discord emulator on SQLite (options: make demo DEMO_ARGS="--port 9000").
demo: $(STAMP)
	$(BIN)/taskflow-link demo $(DEMO_ARGS)

## Everything CI runs: static checks, then every test suite, in TEST_WORKERS processes
## (pytest-xdist; CI's machine has 2 CPUs, and each worker starts its own Postgres and Redis).
## A test file runs whole in one worker (--dist loadfile): its module-scoped servers (the
## shared Discord emulator, the demo the browser drives) start once. TEST_WORKERS=0: one
## process, no workers.
TEST_WORKERS ?= 2
test: lint
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

## Benchmarks (needs wrk, and Postgres' initdb/pg_ctl): one table of ratios measured in one
## run on 1M links (a few minutes). Options: make bench BENCH_ARGS="--seconds 20 --output r.md"
## The app and the emulator run from $(RUNTIME_VENV) (as deployed: no dev extras); the runner,
## the reference and the guide from $(VENV).
bench: $(STAMP) $(RUNTIME_STAMP)
	$(BIN)/python -m benchmarks.run --app-venv $(RUNTIME_VENV) $(BENCH_ARGS)

## The smoke run (1000 links, ~1 s a row): fails only when something is broken. CI makes it
## (tests/integration/test_benchmarks_smoke.py) with the app in $(VENV), not building this one.
bench-smoke: $(STAMP) $(RUNTIME_STAMP)
	$(BIN)/python -m benchmarks.run --smoke --app-venv $(RUNTIME_VENV) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV)-lock $(RUNTIME_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
