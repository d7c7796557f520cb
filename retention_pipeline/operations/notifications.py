"""Copies Metronome notifications from the webhook inbox into DuckDB and refreshes segments when one matters.

The receiver (operations/webhooks.py) only appends to its SQLite inbox. This sensor copies new inbox rows into
`raw.metronome_notifications` and, when a new event can change hourly segment membership, requests the
hourly_retention run for the latest complete hour, so segments react within minutes of a low-balance alert
instead of at the next schedule tick. Its cursor is the inbox file's identity and the last row copied from it
(`seq` and event id), so a recreated inbox (deleted, moved to a new volume or path, restored from an older copy),
whose row numbers restart, is read from its first row. The insert ignores ids already stored, so a re-read batch
or a restarted cursor never duplicates rows or requests a run for old events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from retention_pipeline.operations.jobs import hourly_retention
from retention_pipeline.operations.webhooks import Inbox, InboxCursor, InboxRow, resolve_inbox_path
from retention_pipeline.partitions import latest_complete_partition
from retention_pipeline.warehouse import DuckDBWarehouse

NOTIFICATIONS_TABLE = "raw.metronome_notifications"
NOTIFICATIONS_DDL = """
    id VARCHAR PRIMARY KEY,              -- Metronome's event id (deliveries are at-least-once)
    type VARCHAR NOT NULL,               -- as sent: alerts.* types do not always match the API's alert_type
    category VARCHAR NOT NULL,           -- 'threshold' (alerts.*), 'lifecycle' (contract./commit./credit.), 'other'
    customer_id VARCHAR,                 -- properties.customer_id for alerts and invoices, top-level for lifecycle
    contract_id VARCHAR,
    commit_id VARCHAR,
    credit_id VARCHAR,
    segment_id VARCHAR,                  -- schedule_items[].id on segment start/end
    offset_duration VARCHAR,             -- signed ISO-8601 duration on offset notifications, e.g. -P7D
    event_timestamp TIMESTAMP,           -- when it happened (the source event's time for offsets), UTC
    received_at TIMESTAMP NOT NULL,      -- when the receiver committed it, UTC
    payload JSON                         -- the whole event; NULL only if DuckDB cannot parse JSON Python accepted
"""
# Over the registered `batch` (inbox rows) with `j`, the body as JSON; lenient, since fields come and go unannounced.
_INSERT_SQL = f"""
INSERT OR IGNORE INTO {NOTIFICATIONS_TABLE} BY NAME
SELECT
    id,
    type,
    CASE
        WHEN type LIKE 'alerts.%' THEN 'threshold'
        WHEN split_part(type, '.', 1) IN ('contract', 'commit', 'credit') THEN 'lifecycle'
        ELSE 'other'
    END AS category,
    customer_id,
    coalesce(j->>'contract_id', j->'properties'->>'contract_id') AS contract_id,
    coalesce(j->>'commit_id', j->'properties'->>'commit_id') AS commit_id,
    coalesce(j->>'credit_id', j->'properties'->>'credit_id') AS credit_id,
    j->>'segment_id' AS segment_id,
    j->>'offset_duration' AS offset_duration,
    try_cast(event_timestamp AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS event_timestamp,
    CAST(received_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS received_at,
    j AS payload
FROM (SELECT *, try_cast(body AS JSON) AS j FROM batch)
ORDER BY seq
RETURNING id
"""

# Event types (shell patterns) that can change hourly segment membership; an offset notification carries its
# source event's type, so "contract.end" also covers "7 days before the contract ends".
SEGMENT_TRIGGERS = (
    "alerts.low_remaining_*balance*",  # credits_low
    "alerts.low_remaining_*credit*",
    "alerts.low_remaining_*commit*",
    "alerts.spend_threshold_reached",  # burn rate, hence days until credits run out
    "invoice.billing_provider_error",  # failed_payment_active
    "contract.start",  # do_not_retarget (just renewed)
    "contract.end",
    "commit.segment.start",  # a new segment refills the balance credits_low reads
    "commit.segment.end",
    "credit.segment.start",
    "credit.segment.end",
)
BATCH_LIMIT = 5_000


class WarehouseBusy(Exception):
    """Another process holds the DuckDB file."""


def affects_segments(event_type: str) -> bool:
    return any(fnmatchcase(event_type, pattern) for pattern in SEGMENT_TRIGGERS)


@contextmanager
def _connect_once(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """One short connection that fails at once on a locked file. DuckDBWarehouse.connect retries for ~100 s, past the
    sensor's 60 s evaluation timeout; skipping a tick instead is free, because the events wait in the inbox."""
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseBusy(str(exc)) from exc
        raise
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def store_notifications(path: Path, rows: list[InboxRow]) -> set[str]:
    """Insert the rows not stored yet into raw.metronome_notifications; the ids that were new."""
    batch = pd.DataFrame([asdict(row) for row in rows])
    with _connect_once(path) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        con.execute(f"CREATE TABLE IF NOT EXISTS {NOTIFICATIONS_TABLE} ({NOTIFICATIONS_DDL})")
        con.register("batch", batch)
        return {new_id for (new_id,) in con.execute(_INSERT_SQL).fetchall()}


@dg.sensor(
    job=hourly_retention,
    minimum_interval_seconds=30,
    description="Copies webhook notifications into raw.metronome_notifications; refreshes hourly segments on "
    "low-balance alerts, billing errors and contract or balance lifecycle events.",
)
def metronome_notifications_sensor(context: dg.SensorEvaluationContext, duckdb: DuckDBWarehouse):
    inbox_path = resolve_inbox_path()
    if not inbox_path.exists():
        return dg.SkipReason(
            f"No webhook inbox at {inbox_path} yet; start `python -m retention_pipeline.webhooks`."
        )
    inbox = Inbox(inbox_path)
    inbox.create()  # gives an inbox made before inboxes had an identity its own
    cursor = InboxCursor.parse(context.cursor)
    start, rows = inbox.read_after(cursor, BATCH_LIMIT)
    if not rows:
        return dg.SkipReason(f"No notifications after row {start.seq} of inbox {start.inbox_id}.")
    if cursor is not None and start != cursor:
        context.log.info(f"Cursor {cursor} does not match inbox {start.inbox_id}; reading it from row 0.")
    try:
        new_ids = store_notifications(duckdb.resolved_path(), rows)
    except WarehouseBusy:
        return dg.SkipReason(
            f"DuckDB file busy (a run holds it); {len(rows)} notifications wait in the inbox."
        )
    context.update_cursor(str(InboxCursor(start.inbox_id, rows[-1].seq, rows[-1].id)))
    new_types = sorted({row.type for row in rows if row.id in new_ids})
    triggers = [t for t in new_types if affects_segments(t)]
    if not triggers:
        return dg.SkipReason(
            f"Stored {len(new_ids)} new notifications (types: {', '.join(new_types) or 'none'}); "
            "none affects segment membership."
        )
    partition = latest_complete_partition("hourly", datetime.now(UTC))
    # Keyed by the events, not by row numbers, which restart with a recreated inbox: a reused key would make the
    # daemon drop the request. An id is new in exactly one tick (the insert ignores stored ids).
    digest = hashlib.sha256("\n".join(sorted(new_ids)).encode()).hexdigest()[:16]
    return dg.RunRequest(
        run_key=f"metronome-notifications-{digest}",
        partition_key=partition,
        tags={"trigger": "metronome_notifications", "notification_types": ",".join(triggers)},
    )


defs = dg.Definitions(sensors=[metronome_notifications_sensor])
