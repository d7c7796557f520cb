# One entry point for people and CI. Every target creates the virtualenv from pyproject.toml first if needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: install run test dev lint format clean bench reliability

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

## The main job on the embedded sandbox (or the real API with METRONOME_BEARER_TOKEN set).
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m retention_pipeline run

## The whole test suite (offline; loopback only), one worker per core (a test file stays on one worker).
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadfile

## The Dagster UI on http://127.0.0.1:3000 with a persistent, git-ignored DAGSTER_HOME.
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

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
