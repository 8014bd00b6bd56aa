# VoicePlatform: `make run` starts the embedded platform, `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: install run test lint pytest bench bench-reconnect bench-slow-reader bench-search soak migrate

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "VoicePlatform needs Python 3.11 (set PYTHON=...)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py seed_demo --port $(PORT)
	$(PY) manage.py runplatform --host $(HOST) --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint pytest

bench: install
	$(PY) -m bench $(BENCH_ARGS)

bench-reconnect: install
	$(PY) -m bench.reconnect $(BENCH_ARGS)

# Session search timings on the current database (DATABASE_URL); data: manage.py generate_sessions.
BENCH_TENANT ?= demo
bench-search: install
	$(PY) manage.py bench_search --tenant $(BENCH_TENANT) $(BENCH_ARGS)

bench-slow-reader: install
	$(PY) -m bench.slow_reader $(BENCH_ARGS)

soak: install
	$(PY) -m bench.soak $(BENCH_ARGS)
