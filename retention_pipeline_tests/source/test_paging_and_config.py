"""Paging that cannot loop, and misconfiguration that fails fast by naming the variable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import metronome
import pytest

from retention_pipeline.cli import main
from retention_pipeline.config import ConfigError
from retention_pipeline.source import extract
from retention_pipeline.source.contacts import ContactsResource
from retention_pipeline.source.metronome import MetronomeResource
from retention_pipeline.source.tables import create_raw_tables
from retention_pipeline.warehouse import DuckDBWarehouse, resolve_duckdb_path


def client_for(server) -> metronome.Metronome:
    return metronome.Metronome(bearer_token="t", base_url=server.url, max_retries=0)


def test_an_empty_page_with_a_cursor_is_followed_and_rows_after_it_are_kept(sandbox, loopback, tenant):
    sandbox.faults.add(r"^/v1/customers$", 200, body={"data": [], "next_page": "more"}, times=1)
    sandbox.faults.add(
        r"^/v1/customers$", 200, body={"data": [tenant.customers[0]], "next_page": None}, times=1
    )
    records = extract.fetch_customers(client_for(loopback))
    archived = [c for c in tenant.customers if c.get("archived_at")]
    assert len(records) == 1 + len(archived)  # the row behind the empty page was not dropped


def test_an_empty_page_whose_cursor_comes_back_means_caught_up(sandbox, loopback, tenant):
    sandbox.faults.add(r"^/v1/customers$", 200, body={"data": [], "next_page": "same"}, times=2)
    records = extract.fetch_customers(client_for(loopback))
    assert len(records) == sum(1 for c in tenant.customers if c.get("archived_at"))
    assert sum(1 for r in sandbox.requests if r.path == "/v1/customers") == 3  # 2 active pages + archived


def test_an_answer_without_data_or_not_json_fails_naming_the_endpoint(sandbox, loopback):
    sandbox.faults.add(r"^/v1/customers$", 200, body={"next_page": None})
    with pytest.raises(extract.ExtractionError, match=r"GET /v1/customers.*without `data`"):
        extract.fetch_customers(client_for(loopback))
    sandbox.faults.add(r"^/v1/customers$", 200, body=b"<html>oops</html>")
    with pytest.raises(extract.ExtractionError, match=r"GET /v1/customers.*unreadable body"):
        extract.fetch_customers(client_for(loopback))
    sandbox.faults.add(r"^/v1/usage$", 200, body=b'{"next_page": null}')
    window = extract.UsageWindow.for_partition(
        "DAY", *[datetime(2026, 11, d, tzinfo=UTC) for d in (18, 19)], 0, None
    )
    with pytest.raises(extract.ExtractionError, match=r"not a usage page"):
        extract.fetch_usage_pages(
            client_for(loopback), window, Path("/nonexistent"), 31, print, extract.UsageStats()
        )


def _load_usage(client, window, db: Path, concurrency: int, log=lambda _: None) -> dict:
    warehouse = DuckDBWarehouse(path=str(db))
    with warehouse.connect() as con:
        create_raw_tables(con)
    extract.extract_usage(client, warehouse.connect, window, 7, log, concurrency=concurrency)
    with warehouse.connect() as con:
        rows = con.execute(
            "SELECT customer_id, billable_metric_id, start_timestamp, end_timestamp, value FROM raw.metronome_usage"
        ).fetchall()
    return {(c, m, s.replace(tzinfo=UTC)): (e - s, v) for c, m, s, e, v in rows}


def test_usage_chunks_paged_concurrently_load_exactly_the_tenant(sandbox, loopback, tenant, tmp_path):
    end = datetime(2026, 11, 19, tzinfo=UTC)
    window = extract.UsageWindow.for_partition(
        "DAY", end - timedelta(days=1), end, 0, 21
    )  # 3 chunks of 7 days
    truth = {
        (r.customer_id, r.billable_metric_id, r.start_timestamp.to_pydatetime()): (timedelta(days=1), r.value)
        for r in tenant.usage_frame("DAY", window.request_start, end).itertuples(index=False)
    }
    chunks: list[str] = []
    concurrent = _load_usage(client_for(loopback), window, tmp_path / "c.duckdb", 3, chunks.append)
    assert len(truth) > 1000 and concurrent == truth
    ranges = sorted(line.split(":")[0].removeprefix("usage DAY ") for line in chunks)
    assert ranges == ["2026-10-29..2026-11-05", "2026-11-05..2026-11-12", "2026-11-12..2026-11-19"]
    assert sum(int(line.split(": ")[1].split()[0].replace(",", "")) for line in chunks) == len(truth)
    assert _load_usage(client_for(loopback), window, tmp_path / "s.duckdb", concurrency=1) == truth


def test_a_failing_usage_chunk_fails_the_extraction_and_writes_nothing(sandbox, loopback, tmp_path):
    end = datetime(2026, 11, 19, tzinfo=UTC)
    window = extract.UsageWindow.for_partition("DAY", end - timedelta(days=1), end, 0, 21)
    sandbox.faults.add(r"^/v1/usage$", 503, times=1)
    with pytest.raises(extract.ExtractionError, match=r"POST /v1/usage DAY .* failed"):
        _load_usage(client_for(loopback), window, tmp_path / "failed.duckdb", concurrency=3)
    assert _count_usage(tmp_path / "failed.duckdb") == 0


def _count_usage(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM raw.metronome_usage").fetchone()[0]


def test_a_repeated_cursor_is_an_error_not_an_endless_loop(sandbox, loopback, tenant):
    first = {"data": [tenant.customers[0]], "next_page": "same"}
    sandbox.faults.add(r"^/v1/customers$", 200, body=first, times=3)
    with pytest.raises(extract.ExtractionError, match="repeated"):
        extract.fetch_customers(client_for(loopback))


def test_errors_name_the_endpoint_and_customer(sandbox, loopback):
    sandbox.faults.add(r"/invoices$", 400, body={"message": "bad things"})
    with pytest.raises(extract.ExtractionError, match=r"invoices failed for customer .*HTTP 400: bad things"):
        extract.fetch_per_customer(client_for(loopback), "invoices", ["c1"], concurrency=1, log=print)


def test_a_customer_deleted_between_list_and_detail_is_skipped_and_reported(loopback, tenant):
    ids = [tenant.customers[0]["id"], "00000000-0000-0000-0000-000000000000"]
    records, stats = extract.fetch_per_customer(
        client_for(loopback), "contracts", ids, concurrency=2, log=print
    )
    assert stats.missing_customers == ["00000000-0000-0000-0000-000000000000"]
    assert len(records) == len(tenant.contracts[ids[0]])


def test_token_with_unreachable_url_fails_fast_naming_the_variable(monkeypatch):
    monkeypatch.setenv("METRONOME_BEARER_TOKEN", "secret-token-value")
    monkeypatch.setenv("METRONOME_API_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="METRONOME_API_URL") as info:
        MetronomeResource().open()
    assert "secret-token-value" not in str(info.value)


def test_rejected_token_names_the_token_variable(loopback, monkeypatch, sandbox):
    sandbox.faults.add(r"^/v1/customers$", 401, body={"message": "Unauthorized"})
    with pytest.raises(ConfigError, match="METRONOME_BEARER_TOKEN"):
        MetronomeResource().open()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRONOME_API_URL", "ftp://example"),
        ("RETENTION_METRONOME_CONCURRENCY", "lots"),
        ("RETENTION_METRONOME_MAX_RETRIES", "-1"),
        ("RETENTION_SANDBOX_NOW", "yesterday"),
        ("RETENTION_SANDBOX_CUSTOMERS", "0"),
    ],
)
def test_bad_values_name_their_variable(monkeypatch, name, value):
    if name == "METRONOME_API_URL":
        monkeypatch.setenv("METRONOME_BEARER_TOKEN", "t")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        MetronomeResource().open()


def test_bad_paths_name_their_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="RETENTION_DUCKDB_PATH"):
        resolve_duckdb_path()
    monkeypatch.setenv("RETENTION_DUCKDB_PATH", str(tmp_path / "raw.duckdb"))
    with pytest.raises(ConfigError, match="RETENTION_DUCKDB_PATH.*schema names"):
        resolve_duckdb_path()
    monkeypatch.setenv("RETENTION_CONTACTS_PATH", str(tmp_path / "missing.csv"))
    with pytest.raises(ConfigError, match="RETENTION_CONTACTS_PATH"):
        ContactsResource().csv_path()
    monkeypatch.setenv("RETENTION_DEFAULT_PHONE_REGION", "XX")
    with pytest.raises(ConfigError, match="RETENTION_DEFAULT_PHONE_REGION"):
        ContactsResource().phone_region()


def test_cli_reports_misconfiguration_with_exit_code_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RETENTION_CONTACTS_PATH", str(tmp_path / "nope.csv"))
    assert main(["run"]) == 2
    assert "RETENTION_CONTACTS_PATH" in capsys.readouterr().err
