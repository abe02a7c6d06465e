# make setup: .venv with exactly the versions of uv.lock (the project and its dev extras), through uv
#             (scripts/uv bootstraps it with pip); idempotent, redone when pyproject.toml or uv.lock change
# make lock:  re-resolve uv.lock to the newest versions pyproject.toml allows
# make demo:  migrate examples/tasks.json into the default (embedded) PostgreSQL and print the summary
# make test:  the whole suite, on a real PostgreSQL (embedded, or TEST_DATABASE_URL), but the browser test
# make test-browser: the Prefect UI as an operator sees it, in headless Chromium (about two minutes)
# make test-matrix: the data-path suite on PostgreSQL 14..18 (what PyPI and Debian give this machine),
#             as the superuser and as a Neon-like owner role; before a release (scripts/pg_matrix.py)
# make test-workers: a sharded Phase 1 run over two Prefect process workers (about two minutes)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := PYTHON=$(PYTHON) scripts/uv
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup lock browser demo test test-browser test-workers test-matrix bench

setup: $(VENV)/.installed browser

# --locked: a uv.lock that no longer matches pyproject.toml is an error, never silently re-resolved.
# --compile-bytecode: every process (the CLI, the Prefect server, each worker) reads the installed
# packages' bytecode instead of compiling their sources where PYTHONDONTWRITEBYTECODE is set: 4.7 s
# of the CLI's start, profiled; a 10,000-file run took 25.8 s -> 20.1 s (one run each).
$(VENV)/.installed: pyproject.toml uv.lock
	$(UV) sync --locked --extra dev --compile-bytecode --quiet
	touch $@

lock:
	$(UV) lock --upgrade

# Debian's Chromium for the browser test, where this user may install it; elsewhere that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)) >/dev/null 2>&1 || \
	    echo "could not install chromium: the browser test will skip"; \
	  else echo "no chromium (and no root apt-get to install it): the browser test will skip"; fi; }

demo: setup
	$(PY) -m flows.phase1 --source examples/tasks.json --report-dir runs

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m 'not browser and not workers'

test-browser: setup
	$(PY) -m pytest -q -m browser

test-matrix: setup
	PYTHON=$(PYTHON) $(PY) scripts/pg_matrix.py

test-workers: setup
	$(PY) -m pytest -q -m workers

bench: setup
	$(PY) bench/phase1.py 1000000
	$(PY) bench/backfill.py 1000000
	$(PY) bench/schema_online.py 300000
