# One entry point for people and CI. Every target creates the virtualenv from pyproject.toml first if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# Every recipe runs as if .venv were activated: `dg` warns when the active venv is not the project's .venv.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: install run test dev docs lint format clean bench reliability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster_instance.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster_instance.yaml $(DAGSTER_HOME)/dagster.yaml

## The main job on the embedded sandbox (or the real API with METRONOME_BEARER_TOKEN set).
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/retention run

## `dg check defs` (the definitions load and validate), then the whole test suite (offline; loopback only), one
## worker per core (a test file stays on one worker; the longest files start first: conftest.py, pyproject addopts).
## The instance config turns Dagster telemetry off.
test: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg check defs
	$(BIN)/python -m pytest -n auto --dist loadfile

## The Dagster UI on http://127.0.0.1:3000 with a persistent, git-ignored DAGSTER_HOME.
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev --host 127.0.0.1 --port 3000

## docs/configuration.md from config.SETTINGS (test_docs.py fails when it drifts); replaced only if rendering works.
docs: $(STAMP)
	$(BIN)/python -m retention_pipeline.configdoc > docs/configuration.md.tmp || { rm -f docs/configuration.md.tmp; exit 1; }
	mv docs/configuration.md.tmp docs/configuration.md

## Performance: every stage against its reference, as ratios (writes bench/results/ and docs/performance.md).
bench: $(STAMP)
	$(BIN)/python -m bench.run

## Fault suite: faults, kills, concurrency, bad input; prints the table and updates docs/reliability.md.
reliability: $(STAMP)
	$(BIN)/python -m reliability.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) data .pytest_cache
