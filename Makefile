# Two commands matter: `make run` (a working provider, nothing else needed) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

# The suite runs against the real PostgreSQL and Redis; override any of these from the environment.
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/authserver)
TEST_REDIS ?= redis://127.0.0.1:6379
TEST_ENV := DEBUG=false \
	SECRET_KEY=test-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz \
	ALLOWED_HOSTS=testserver,localhost,127.0.0.1 \
	ISSUER=https://auth.example.test \
	DATABASE_URL=$(TEST_DATABASE_URL) \
	CACHE_URL=$(or $(TEST_CACHE_URL),$(TEST_REDIS)/14) \
	CELERY_BROKER_URL=$(or $(TEST_BROKER_URL),$(TEST_REDIS)/15)

.PHONY: run test lint format migrations-check clean bench bench-purge faults

$(VENV)/.run-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.run-installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.bench-installed: $(VENV)/.run-installed bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

## run: a working provider on http://$(HOST):$(PORT) with a demo user; SQLite and a file-system
## broker unless DATABASE_URL / REDIS_URL are set. Ctrl-C stops the server and the worker.
run: $(VENV)/.run-installed
	@export DEBUG=$${DEBUG:-true} ISSUER=$${ISSUER:-http://$(HOST):$(PORT)}; set -e; \
	$(PY) manage.py migrate --noinput; \
	$(PY) manage.py seed_demo; \
	$(VENV)/bin/celery -A authserver worker --beat --concurrency=1 --loglevel=INFO & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(PY) manage.py runserver $(HOST):$(PORT)

# openid-client (Node) for the certified-RP run in tests/rp; without npm that test is skipped.
tests/rp/node_modules/.installed: tests/rp/package.json tests/rp/package-lock.json
	npm ci --prefix tests/rp --no-audit --no-fund --loglevel=error
	touch $@

## test: the whole suite (browser tests and the certified-RP run included) against PostgreSQL
## and Redis; installs tests/rp's node packages first when npm is on the PATH.
test: $(VENV)/.dev-installed $(if $(shell command -v npm),tests/rp/node_modules/.installed)
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

## bench: the token endpoint under wrk (client_credentials, refresh rotation, introspection, the
## authorization-code exchange) next to our /ping and a bare Django app's /ping (the machine's
## reference, under gunicorn's sync worker, which scales the issue's targets to this machine), in
## PostgreSQL (authserver_bench_tokens, created and dropped); one worker of the production server
## (granian, authserver/server.py), PostgreSQL and Redis on CPU 0, wrk on CPU 1.
## Options: BENCH_ARGS="--duration 30 --connections 4" (see bench/README.md). Installs wrk if missing.
## BENCH_ARGS="--peer node-oidc-provider": node-oidc-provider measured the same way, next to ours
## (needs node and npm; bench/tokens.py runs npm ci in bench/peers/node-oidc-provider if needed).
bench: $(VENV)/.bench-installed
	@command -v wrk >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y --no-install-recommends wrk >/dev/null \
	  || { apt-get update >/dev/null && apt-get install -y --no-install-recommends wrk >/dev/null; }; }
	$(PY) bench/tokens.py $(BENCH_ARGS)

## bench-purge: seed 1,000,000 stale and 1,000,000 live refresh tokens in PostgreSQL
## (authserver_bench, created and dropped), purge them under token-endpoint load, print the
## figures. Options: BENCH_ARGS="--batch-size 10000 --rest-seconds 30" (see bench/README.md).
bench-purge: $(VENV)/.bench-installed
	$(PY) bench/purge.py $(BENCH_ARGS)

## faults: fault injection against the live server (granian, a Celery worker) in a throw-away
## PostgreSQL cluster and Redis of its own (the shared ones are never touched): PostgreSQL
## restarted under load, Redis stopped, the worker SIGKILLed mid-purge and mid-logout-delivery.
## Prints what it injected, what the clients saw and what the database holds; ~3 min. Needs
## pg_createcluster and redis-server. Options: FAULTS_ARGS="--only redis logout --keep".
faults: $(VENV)/.run-installed
	$(PY) bench/faults.py $(FAULTS_ARGS)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf var staticfiles .pytest_cache
