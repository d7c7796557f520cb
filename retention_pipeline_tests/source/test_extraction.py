"""Extraction end to end against the sandbox on loopback, through the Dagster jobs users run (their raw assets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import metronome
import pytest

from retention_pipeline.definitions import defs
from retention_pipeline.source.extract import ceil_day
from retention_pipeline.warehouse import resolve_duckdb_path

DAY = "2026-11-18"  # complete as of the pinned clock (2026-11-20 10:30 UTC)
NEXT_DAY = "2026-11-19"
HOUR = "2026-11-20-09:00"


def extraction_assets(job) -> list[dg.AssetKey]:
    """The job's raw assets (every Metronome endpoint it extracts, and the contacts CSV): all these tests read.
    The rest of the job (features, segments, sync, measurement) is covered by test_make_run.py and the e2e tests."""
    return sorted((key for key in job.asset_layer.executable_asset_keys if key.path[0] == "raw"), key=str)


def run_job(name: str, partition: str, instance):
    """The job users run, limited to its extraction step(s) (as a UI materialization of the raw assets would)."""
    job = defs.resolve_job_def(name)
    selection = extraction_assets(job)
    assert {k.path[-1] for k in selection} >= {"metronome_customers", "metronome_invoices", "contacts"}
    result = job.execute_in_process(partition_key=partition, instance=instance, asset_selection=selection)
    assert result.success
    return result


def query(sql: str, params=None):
    with duckdb.connect(str(resolve_duckdb_path()), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def usage_in_db(window_size: str):
    rows = query(
        "SELECT customer_id, billable_metric_id, start_timestamp, value FROM raw.metronome_usage "
        "WHERE window_size = ? ORDER BY ALL",
        [window_size],
    )
    return {(c, m, s.replace(tzinfo=UTC)): v for c, m, s, v in rows}


def usage_in_tenant(tenant, window_size: str, start: datetime, end: datetime):
    day_aligned_end = ceil_day(end)  # the API (and the tenant) only take midnight-aligned ranges
    frame = tenant.usage_frame(window_size, start, day_aligned_end)
    frame = frame[frame["end_timestamp"] <= end]
    return {
        (r.customer_id, r.billable_metric_id, r.start_timestamp.to_pydatetime()): r.value
        for r in frame.itertuples(index=False)
    }


@pytest.fixture
def short_history(monkeypatch, tenant, tmp_path):
    contacts = tmp_path / "contacts.csv"
    tenant.contacts_frame().to_csv(contacts, index=False)
    monkeypatch.setenv("RETENTION_CONTACTS_PATH", str(contacts))
    monkeypatch.setenv("RETENTION_HISTORY_DAYS", "20")
    monkeypatch.setenv("RETENTION_HOURLY_HISTORY_DAYS", "2")
    monkeypatch.setenv("RETENTION_METRONOME_CONCURRENCY", "4")


def test_daily_job_loads_exactly_what_the_tenant_holds_despite_429_and_500(
    loopback, sandbox, tenant, instance, short_history
):
    sandbox.faults.add(r"^/v1/customers$", 429, headers={"Retry-After": "1"})
    sandbox.faults.add(r"^/v1/usage$", 500)
    sandbox.faults.add(r"/invoices$", 503, times=2)
    sandbox.faults.add(r"^/v2/contracts/list$", 429, headers={"Retry-After": "1"})

    run_job("daily_retention", DAY, instance)

    statuses = [(r.path, r.status) for r in sandbox.requests]
    assert ("/v1/customers", 429) in statuses and ("/v1/customers", 200) in statuses
    assert ("/v1/usage", 500) in statuses
    assert sum(1 for _, s in statuses if s == 503) == 2
    assert query("SELECT count(*) FROM raw.metronome_customers")[0][0] == len(tenant.customers)
    assert query("SELECT count(*) FROM raw.metronome_customers WHERE is_archived")[0][0] == sum(
        1 for c in tenant.customers if c.get("archived_at")
    )
    for table, truth in [
        ("raw.metronome_contracts", tenant.contracts),
        ("raw.metronome_invoices", tenant.invoices),
        ("raw.metronome_balances", tenant.balances),
    ]:
        assert query(f"SELECT count(*) FROM {table}")[0][0] == sum(len(v) for v in truth.values()), table
    assert query("SELECT count(*) FROM raw.metronome_billable_metrics")[0][0] == len(tenant.billable_metrics)

    # First run on an empty file backfills RETENTION_HISTORY_DAYS (20) of day windows ending with the partition.
    end = datetime(2026, 11, 19, tzinfo=UTC)
    expected = usage_in_tenant(tenant, "DAY", end - timedelta(days=20), end)
    assert len(expected) > 1000  # the usage page size (700) forces several pages per request
    assert usage_in_db("DAY") == expected
    people, rejected = query(
        "SELECT (SELECT count(*) FROM raw.contacts), (SELECT count(*) FROM raw.contacts_rejected)"
    )[0]
    assert people + rejected == len(tenant.contacts_frame())  # every CSV row accounted for
    assert people > len(tenant.customers) and rejected >= 2  # the sandbox plants unknown-customer rows


def test_rerunning_a_partition_is_idempotent(loopback, tenant, instance, short_history):
    run_job("daily_retention", DAY, instance)
    before = usage_in_db("DAY")
    counts = query(
        "SELECT (SELECT count(*) FROM raw.metronome_invoices), (SELECT count(*) FROM raw.contacts)"
    )
    run_job("daily_retention", DAY, instance)
    assert usage_in_db("DAY") == before
    assert (
        query("SELECT (SELECT count(*) FROM raw.metronome_invoices), (SELECT count(*) FROM raw.contacts)")
        == counts
    )
    duplicates = query(
        "SELECT count(*) FROM (SELECT 1 FROM raw.metronome_usage "
        "GROUP BY customer_id, billable_metric_id, window_size, start_timestamp HAVING count(*) > 1)"
    )
    assert duplicates[0][0] == 0


def test_late_usage_is_picked_up_by_the_lookback_and_not_beyond(loopback, tenant, instance, short_history):
    run_job("daily_retention", DAY, instance)
    customer = next(c["id"] for c in tenant.customers if not c.get("archived_at"))
    tokens = next(m for m in tenant.billable_metrics if m["name"] == "tokens")
    client = metronome.Metronome(bearer_token="test-token", base_url=loopback.url)
    late_inside = datetime(2026, 11, 17, 5, tzinfo=UTC)  # 2 days before NEXT_DAY: inside the 3-day lookback
    late_outside = datetime(2026, 11, 10, 5, tzinfo=UTC)  # 9 days before: outside it
    client.v1.usage.ingest(
        usage=[
            {"transaction_id": f"late-{i}", "customer_id": customer, "event_type": "completion",
             "timestamp": ts.isoformat(), "properties": {"tokens": 1000}}
            for i, ts in enumerate([late_inside, late_outside])
        ]
    )  # fmt: skip
    before = usage_in_db("DAY")

    run_job("daily_retention", NEXT_DAY, instance)

    after = usage_in_db("DAY")
    inside_key = (customer, tokens["id"], datetime(2026, 11, 17, tzinfo=UTC))
    outside_key = (customer, tokens["id"], datetime(2026, 11, 10, tzinfo=UTC))
    assert after[inside_key] == before[inside_key] + 1000
    assert after[outside_key] == before[outside_key]
    assert (customer, tokens["id"], datetime(2026, 11, 19, tzinfo=UTC)) in after  # the new day arrived


def test_hourly_job_keeps_complete_hours_up_to_the_partition_end(loopback, tenant, instance, short_history):
    run_job("hourly_retention", HOUR, instance)
    end = datetime(2026, 11, 20, 10, tzinfo=UTC)
    # The window starts at the earlier of the lookback (3 days before 09:00 → 11-17) and the first-run history
    # (RETENTION_HOURLY_HISTORY_DAYS=2 before 10:00 → 11-18), day-aligned.
    expected = usage_in_tenant(tenant, "HOUR", datetime(2026, 11, 17, tzinfo=UTC), end)
    assert usage_in_db("HOUR") == expected
    assert max(k[2] for k in expected) == datetime(2026, 11, 20, 9, tzinfo=UTC)
