"""A DuckDB file remembers its source and destination targets: a run that resolves other ones stops before it
extracts or sends, and acknowledgements of one target never count for another."""

import os

import duckdb
import pytest

from retention_pipeline.definitions import defs
from retention_pipeline.warehouse import resolve_duckdb_path

DAY = "2026-11-19"
CREDENTIALS = ("CUSTOMERIO_SITE_ID", "CUSTOMERIO_API_KEY", "CUSTOMERIO_TRACK_URL", "CUSTOMERIO_APP_URL",
               "META_ACCESS_TOKEN", "META_AD_ACCOUNT_ID", "META_GRAPH_URL", "GOOGLE_ACCESS_TOKEN",
               "GOOGLE_DATA_MANAGER_URL", "TIKTOK_ACCESS_TOKEN", "TIKTOK_ADVERTISER_ID", "TIKTOK_API_URL",
               "PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID", "PINTEREST_API_URL")  # fmt: skip


def db(sql, params=None):
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        return con.execute(sql, params or []).fetchall()


def run_daily():
    return defs.resolve_job_def("daily_retention").execute_in_process(partition_key=DAY, raise_on_error=False)


def failure(result) -> tuple[str, str]:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    return event.step_key, event.step_failure_data.error.message


def sends(*sandboxes) -> int:
    return sum(1 for s in sandboxes for r in s.requests if r.method != "GET")


@pytest.fixture
def sandbox_first(destinations, monkeypatch):
    """The file's first run used the embedded destination sandboxes (credentials unset)."""
    saved = {name: value for name in CREDENTIALS if (value := os.environ.get(name))}
    for name in CREDENTIALS:
        monkeypatch.delenv(name)
    assert run_daily().success
    for name, value in saved.items():
        monkeypatch.setenv(name, value)
    return destinations


def test_credentials_appearing_on_a_sandbox_file_stop_the_run_before_extraction(sandbox_first, monkeypatch):
    cio, meta, google, tiktok, pinterest, routing = sandbox_first
    extracted = db("SELECT max(extracted_at) FROM raw.metronome_customers")

    result = run_daily()

    step, message = failure(result)
    assert step == "pipeline__bindings"
    assert "Meta: the file was used with 'sandbox'" in message and "META_ACCESS_TOKEN" in message
    assert "RETENTION_ALLOW_TARGET_CHANGE=customerio,google,meta,pinterest,tiktok" in message
    assert db("SELECT max(extracted_at) FROM raw.metronome_customers") == extracted  # nothing extracted
    assert sends(cio, meta, google, tiktok, pinterest) == 0

    # Allowed explicitly: the real targets get everyone, because the sandbox's acknowledgements do not count.
    monkeypatch.setenv("RETENTION_ALLOW_TARGET_CHANGE", "customerio,meta,google,tiktok,pinterest")
    assert run_daily().success
    real = db(
        "SELECT count(*) FROM sync.destination_state WHERE destination = 'meta' AND target LIKE 'act_%'"
    )[0][0]
    sandboxed = db(
        "SELECT count(*) FROM sync.destination_state WHERE destination = 'meta' AND target = 'sandbox'"
    )
    assert (
        real == sandboxed[0][0] > 0
    )  # every person acknowledged by the sandbox was sent to the real audience
    assert sum(len(meta.member_rows(a)) for a in routing["meta"]["audiences"].values()) == real
    for destination in ("customerio", "google", "tiktok", "pinterest"):  # and so did every other destination
        real, sandboxed = db(
            "SELECT count(*) FILTER (target <> 'sandbox'), count(*) FILTER (target = 'sandbox') "
            "FROM sync.destination_state WHERE destination = ?",
            [destination],
        )[0]
        assert real == sandboxed > 0, destination


def test_a_lost_secret_never_sends_to_the_sandbox_instead(destinations, monkeypatch):
    cio, meta, google, tiktok, pinterest, routing = destinations
    assert run_daily().success  # bound to the "real" (loopback) accounts
    monkeypatch.delenv("META_ACCESS_TOKEN")
    monkeypatch.delenv("META_AD_ACCOUNT_ID")
    state_before = db("SELECT count(*) FROM sync.destination_state")

    step, message = failure(run_daily())

    assert step == "pipeline__bindings"
    assert "resolves 'sandbox' because META_ACCESS_TOKEN and META_AD_ACCOUNT_ID are unset" in message
    assert db("SELECT count(*) FROM sync.destination_state") == state_before


def test_a_metronome_token_appearing_on_a_sandbox_file_extracts_nothing(destinations, sandbox, monkeypatch):
    assert run_daily().success  # the embedded tenant
    customers = db("SELECT count(*), max(extracted_at) FROM raw.metronome_customers")
    server = sandbox.serve()
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "token")
    monkeypatch.setenv("METRONOME_API_URL", server.url)
    try:
        step, message = failure(run_daily())
    finally:
        server.close()
    assert step == "pipeline__bindings" and "Metronome source: the file was used with 'sandbox'" in message
    assert db("SELECT count(*), max(extracted_at) FROM raw.metronome_customers") == customers
