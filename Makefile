# make setup: a .venv with the project and its dev extras (idempotent; reinstalls when pyproject changes)
# make demo:  migrate examples/tasks.json into the default (embedded) PostgreSQL and print the summary
# make test:  the whole suite, on a real PostgreSQL (embedded, or TEST_DATABASE_URL)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m flows.phase1 --source examples/tasks.json --report-dir runs

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/phase1.py 1000000
	$(PY) bench/backfill.py 1000000
	$(PY) bench/schema_online.py 300000
