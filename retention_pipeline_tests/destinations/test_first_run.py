"""A new DuckDB file never meets real destinations by accident: a mistyped RETENTION_DUCKDB_PATH would start from
no acknowledged state and re-send every member, so such a run stops before it extracts or sends anything — from
the CLI and from the first step of every job (UI and schedule runs) — until the first run is declared."""

import os

import dagster as dg
import duckdb
import pytest

from retention_pipeline.cli import main
from retention_pipeline.cli.run import preflight
from retention_pipeline.config import ConfigError
from retention_pipeline.definitions import defs
from retention_pipeline.environment import BINDINGS_KEY, current_bindings
from retention_pipeline.warehouse import resolve_duckdb_path

DAY = "2026-11-19"


def sends(*sandboxes) -> int:
    return sum(1 for s in sandboxes for r in s.requests if r.method != "GET")


def raw_tables() -> int:
    with duckdb.connect(str(resolve_duckdb_path()), read_only=True) as con:
        return con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw'").fetchone()[0]


@pytest.fixture
def real_destinations(destinations, monkeypatch, tmp_path):
    """Every destination as if real (credentials, loopback URLs), a DAGSTER_HOME, no first-run flag."""
    monkeypatch.delenv("RETENTION_FIRST_RUN", raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return destinations


def test_retention_run_on_a_new_file_stops_before_anything_and_names_the_path(real_destinations, capsys):
    *everywhere, _ = real_destinations  # the five sandboxes, without the routing

    assert main(["run", "--skip-hourly"]) == 2

    err = capsys.readouterr().err
    assert f"RETENTION_DUCKDB_PATH={str(resolve_duckdb_path())!r}" in err
    assert str(resolve_duckdb_path().resolve()) in err
    assert "retention run --first-run" in err and "RETENTION_FIRST_RUN=1" in err
    assert sends(*everywhere) == 0
    assert raw_tables() == 0


def test_a_ui_run_is_refused_too_and_the_flag_or_an_existing_file_lets_runs_proceed(
    real_destinations, monkeypatch
):
    *everywhere, _ = real_destinations  # the five sandboxes, without the routing
    job = defs.resolve_job_def("daily_retention")

    refused = job.execute_in_process(partition_key=DAY, raise_on_error=False)

    (failure,) = [e for e in refused.all_events if e.is_step_failure]
    assert failure.step_key == "pipeline__bindings"
    assert "--first-run" in failure.step_failure_data.error.message
    assert sends(*everywhere) == 0 and raw_tables() == 0

    # Declared (what `retention run --first-run` sets, or a UI run's environment): everyone is sent.
    monkeypatch.setenv("RETENTION_FIRST_RUN", "1")
    assert job.execute_in_process(partition_key=DAY, raise_on_error=False).success
    first = sends(*everywhere)
    assert first > 0

    # The file now records its targets: a later run needs no flag and sends only what changed (nothing).
    monkeypatch.delenv("RETENTION_FIRST_RUN")
    sync_only = [BINDINGS_KEY, dg.AssetKey(["sync", "activation_daily"])]
    assert job.execute_in_process(partition_key=DAY, asset_selection=sync_only, raise_on_error=False).success
    assert sends(*everywhere) == first


def test_the_first_run_flag_of_retention_run_covers_only_the_check_that_records_the_targets(
    real_destinations,
):
    with pytest.raises(ConfigError, match="--first-run"):
        preflight(first_run=False)

    preflight(first_run=True)

    assert "RETENTION_FIRST_RUN" not in os.environ  # not left set for the jobs (nor a later mistyped path)
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        assert {"customerio", "meta", "google", "tiktok", "pinterest"} <= set(current_bindings(con))
    preflight(first_run=False)  # the file is known now
