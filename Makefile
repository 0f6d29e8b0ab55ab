# fireman: the two commands users need are `make up` and `make test`; everything else supports them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fireman-installed
FIREMAN_HOME ?= $(CURDIR)/.fireman
export FIREMAN_HOME
# Tests and local runs read the example data from the shared copy when it is there.
FIREMAN_SPAMBASE_PATH ?= $(wildcard $(CURDIR)/../shared/data/spambase.csv)
export FIREMAN_SPAMBASE_PATH
PYTEST_ARGS ?=

.PHONY: help setup system-deps python-deps kafka-jars lock docs lint typecheck test test-slow up down clean

help:
	@echo "make up         start the whole local platform"
	@echo "make test       set up, lint, type-check and run the unit and integration tests"
	@echo "make test-slow  the slow tests (long end-to-end and soak runs)"
	@echo "make setup      install everything (Python venv, Kafka jars, InfluxDB and PostgreSQL via apt)"

setup: system-deps python-deps kafka-jars

# Debian packages: InfluxDB 1.x server, Java 17 and Maven for Kafka, Chromium for the browser tests,
# Prometheus for the metrics test, PostgreSQL for MLflow and Airflow with FIREMAN_POSTGRES_ENABLED (Debian
# keeps its server programs off PATH, in /usr/lib/postgresql/<major>/bin). Needs root for apt.
system-deps:
	@missing=""; \
	command -v influxd >/dev/null || missing="$$missing influxdb"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing (re-run as root, or install them)"; exit 2; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), "fireman needs Python 3.11"'
	@test -x $(BIN)/uv || $(BIN)/pip install -q uv
	$(BIN)/uv pip install -q -p $(BIN)/python -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

python-deps: $(STAMP)

kafka-jars: python-deps
	@$(BIN)/fireman services fetch-kafka

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock:
	$(BIN)/uv pip compile -q -p $(BIN)/python --extra dev pyproject.toml -o requirements.lock

# Regenerate the README's configuration table from the settings classes.
docs: python-deps
	$(BIN)/python -m fireman.settings_doc README.md

lint: python-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: python-deps
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

up: setup
	$(BIN)/fireman up

down:
	$(BIN)/fireman down

clean:
	-$(BIN)/fireman services stop
	rm -rf $(FIREMAN_HOME)
