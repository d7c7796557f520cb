"""The delta-sync engine: desired state (DuckDB) − acknowledged state (DuckDB) → a plan → destination adapters →
ledger + new acknowledged state.

Crash safety is intent-then-ack: the plan's items are written to `sync.ledger_items` as `intent` before anything
is sent; only acknowledged items move `sync.destination_state`. A crash in between leaves the state untouched, so
the next run plans the same items again, and every send is idempotent at the destination (membership adds/removes,
Customer.io events with deterministic ids). Rejected items stay out of the state and are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import duckdb
import pandas as pd

from retention_pipeline.destinations.identity import IDENTITY_MACROS_SQL
from retention_pipeline.segments.project import AD_DESTINATIONS, Segment

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

DDL = """
CREATE SCHEMA IF NOT EXISTS sync;
CREATE TABLE IF NOT EXISTS sync.destination_state (
    segment VARCHAR NOT NULL, destination VARCHAR NOT NULL, member_key VARCHAR NOT NULL,
    payload JSON NOT NULL, payload_hash VARCHAR NOT NULL, acknowledged_at TIMESTAMP NOT NULL,
    request_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS sync.ledger (
    request_id VARCHAR NOT NULL, sync_id VARCHAR NOT NULL, partition_key VARCHAR, segment VARCHAR NOT NULL,
    destination VARCHAR NOT NULL, operation VARCHAR NOT NULL, items INTEGER NOT NULL, status VARCHAR NOT NULL,
    http_status INTEGER, error VARCHAR, detail JSON, sent_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS sync.ledger_items (
    sync_id VARCHAR NOT NULL, request_id VARCHAR, segment VARCHAR NOT NULL, destination VARCHAR NOT NULL,
    member_key VARCHAR NOT NULL, operation VARCHAR NOT NULL, payload_hash VARCHAR NOT NULL,
    status VARCHAR NOT NULL, reason VARCHAR, updated_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS sync.runs (
    sync_id VARCHAR NOT NULL, cadence VARCHAR, partition_key VARCHAR, dry_run BOOLEAN NOT NULL,
    started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, status VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS sync.last_plan (
    sync_id VARCHAR NOT NULL, segment VARCHAR NOT NULL, destination VARCHAR NOT NULL, member_key VARCHAR NOT NULL,
    operation VARCHAR NOT NULL, payload_hash VARCHAR NOT NULL, dry_run BOOLEAN NOT NULL, planned_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS sync.coverage (
    segment VARCHAR NOT NULL, destination VARCHAR NOT NULL, as_of TIMESTAMP, people INTEGER NOT NULL,
    with_identifier INTEGER NOT NULL, acknowledged INTEGER NOT NULL, destination_matched INTEGER,
    coverage_pct DOUBLE, computed_at TIMESTAMP NOT NULL
);
"""

# Identifiers per destination, normalized and hashed in DuckDB by the identity macros (email: trim + lowercase;
# phones from E.164: Meta hashes the digits only, Google keeps the '+'). Raw email/phone never reach ad payloads.
DESIRED_SQL = """
CREATE OR REPLACE TEMP TABLE sync_desired AS
WITH people AS (
    SELECT a.segment, a.destination, a.as_of, a.cadence, a.customer_id, a.person_id, a.tier, a.reason,
           norm_email(c.email) AS email, c.phone_e164 AS phone
    FROM segments.audiences AS a
    LEFT JOIN raw.contacts AS c USING (customer_id, person_id)
    WHERE a.segment IN (SELECT unnest($segments::VARCHAR[]))
),
features AS (
    SELECT f.* FROM analytics.customer_features AS f
    JOIN (SELECT DISTINCT cadence, as_of, customer_id FROM people) USING (cadence, as_of, customer_id)
),
payloads AS (
    SELECT p.segment, p.destination, p.customer_id, p.person_id,
        CASE p.destination
            WHEN 'customerio' THEN CASE WHEN p.person_id IS NOT NULL THEN json_object(
                'email', p.email, 'tier', coalesce(p.tier, 'member'), 'reason', p.reason,
                'features', json_object(
                    'usage_7d', f.usage_7d, 'usage_prior_7d', f.usage_prior_7d,
                    'wow_usage_change_pct', round(f.wow_usage_change_pct, 1),
                    'days_since_last_usage', f.days_since_last_usage, 'days_to_renewal', f.days_to_renewal,
                    'credit_balance', f.credit_balance,
                    'days_until_credits_depleted', round(f.days_until_credits_depleted, 1),
                    'credit_used_pct', round(f.credit_used_pct, 1), 'has_failed_payment', f.has_failed_payment))
            END
            WHEN 'meta' THEN CASE WHEN p.email IS NOT NULL OR meta_phone(p.phone) IS NOT NULL THEN json_object(
                'EMAIL', coalesce(sha256(p.email), ''), 'PHONE', coalesce(meta_phone_sha256(p.phone), ''))
            END
            WHEN 'google' THEN CASE WHEN p.email IS NOT NULL OR google_phone(p.phone) IS NOT NULL THEN json_object(
                'emailAddress', sha256(p.email), 'phoneNumber', google_phone_sha256(p.phone))
            END
        END AS payload
    FROM people AS p
    LEFT JOIN features AS f USING (customer_id)
)
SELECT segment, destination, customer_id, person_id AS member_key, payload, md5(CAST(payload AS VARCHAR)) AS payload_hash
FROM payloads
"""

PLAN_SQL = """
CREATE OR REPLACE TEMP TABLE sync_plan AS
WITH desired AS (SELECT * FROM sync_desired WHERE payload IS NOT NULL AND member_key IS NOT NULL),
state AS (
    SELECT * FROM sync.destination_state
    WHERE segment IN (SELECT unnest($segments::VARCHAR[]))
)
SELECT d.segment, d.destination, d.member_key, 'add' AS operation, d.payload, d.payload_hash
FROM desired AS d ANTI JOIN state AS s USING (segment, destination, member_key)
UNION ALL
SELECT s.segment, s.destination, s.member_key, 'remove', s.payload, s.payload_hash
FROM state AS s ANTI JOIN desired AS d USING (segment, destination, member_key)
UNION ALL
SELECT d.segment, d.destination, d.member_key, 'update', d.payload, d.payload_hash
FROM desired AS d JOIN state AS s USING (segment, destination, member_key)
WHERE d.payload_hash <> s.payload_hash
"""


@dataclass(frozen=True)
class Change:
    """One planned row for one destination: add, remove or update (the old payload for removes)."""

    member_key: str
    operation: str
    payload: dict
    payload_hash: str
    previous_payload: dict | None = None


@dataclass
class RequestResult:
    """One HTTP request a destination adapter sent, as the ledger records it."""

    operation: str
    items: int
    ok: bool
    http_status: int | None = None
    error: str | None = None
    detail: dict = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class ItemResult:
    member_key: str
    operation: str
    ok: bool
    reason: str | None = None
    request_id: str | None = None


@dataclass
class SendResult:
    requests: list[RequestResult] = field(default_factory=list)
    items: list[ItemResult] = field(default_factory=list)


class DestinationAdapter(Protocol):
    """A destination as the engine sees it: a name, its per-request limit, the request count a plan needs, `send`."""

    name: str
    per_request_limit: int

    def expected_requests(self, changes: list[Change]) -> int:
        """⌈changes / the destination's per-request limit⌉, per kind of call."""

    def send(self, segment: Segment, changes: list[Change], context: SyncContext) -> SendResult: ...


@dataclass(frozen=True)
class SyncContext:
    sync_id: str
    cadence: str
    partition_key: str
    as_of: datetime


@dataclass
class DestinationReport:
    segment: str
    destination: str
    adds: int = 0
    removes: int = 0
    updates: int = 0
    requests: int = 0
    expected_requests: int = 0
    acked: int = 0
    rejected: int = 0
    people: int = 0
    with_identifier: int = 0
    failed_requests: int = 0
    first_error: str | None = None
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


def payload_hash(payload: dict) -> str:
    return hashlib.md5(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def compute_plan(con: duckdb.DuckDBPyConnection, segments: list[str]) -> None:
    """sync_desired and sync_plan (temp tables) for the given segments; columnar, in DuckDB."""
    con.execute(IDENTITY_MACROS_SQL)
    con.execute(DESIRED_SQL, {"segments": segments})
    con.execute(PLAN_SQL, {"segments": segments})


def plan_changes(con: duckdb.DuckDBPyConnection, segment: str, destination: str) -> list[Change]:
    rows = con.execute(
        """SELECT p.member_key, p.operation, CAST(p.payload AS VARCHAR), p.payload_hash, CAST(s.payload AS VARCHAR)
        FROM sync_plan AS p
        LEFT JOIN sync.destination_state AS s USING (segment, destination, member_key)
        WHERE p.segment = ? AND p.destination = ? ORDER BY p.operation, p.member_key""",
        [segment, destination],
    ).fetchall()
    return [
        Change(
            key,
            op,
            json.loads(payload),
            digest,
            json.loads(previous) if previous and op == "update" else None,
        )
        for key, op, payload, digest, previous in rows
    ]


def _coverage(con: duckdb.DuckDBPyConnection, segment: str, destination: str) -> tuple[int, int]:
    return con.execute(
        "SELECT count(*), count(payload) FROM sync_desired WHERE segment = ? AND destination = ?",
        [segment, destination],
    ).fetchone()


def _record_intent(con, ctx: SyncContext, segment: str, destination: str, changes: list[Change]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    frame = pd.DataFrame(
        [(c.member_key, c.operation, c.payload_hash) for c in changes],
        columns=["member_key", "operation", "payload_hash"],
    )
    con.register("intent_items", frame)
    con.execute(
        "INSERT INTO sync.ledger_items SELECT ?, NULL, ?, ?, member_key, operation, payload_hash, 'intent', NULL, ? "
        "FROM intent_items",
        [ctx.sync_id, segment, destination, now],
    )
    con.unregister("intent_items")


def _record_outcome(
    con, ctx: SyncContext, segment: str, destination: str, changes: list[Change], result: SendResult
) -> tuple[int, int]:
    """Ledger rows for every request, item outcomes and the acknowledged state, set-based in one transaction."""
    now = datetime.now(UTC).replace(tzinfo=None)
    by_key = {(c.member_key, c.operation): c for c in changes}
    outcomes = pd.DataFrame(
        [
            (
                i.member_key,
                i.operation,
                i.ok,
                i.reason,
                i.request_id or "",
                json.dumps(c.payload),
                c.payload_hash,
            )
            for i in result.items
            if (c := by_key.get((i.member_key, i.operation))) is not None
        ],
        columns=["member_key", "operation", "ok", "reason", "request_id", "payload", "payload_hash"],
    )
    requests = pd.DataFrame(
        [
            (r.request_id, r.operation, r.items, "acked" if r.ok else "failed", r.http_status, r.error,
             json.dumps(r.detail))
            for r in result.requests
        ],
        columns=["request_id", "operation", "items", "status", "http_status", "error", "detail"],
    )  # fmt: skip
    con.register("item_outcomes", outcomes)
    con.register("request_outcomes", requests)
    key = {"sync_id": ctx.sync_id, "segment": segment, "destination": destination, "now": now}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """INSERT INTO sync.ledger SELECT request_id, $sync_id, $pk, $segment, $destination, operation, items,
            status, http_status, error, CAST(detail AS JSON), $now FROM request_outcomes""",
            {**key, "pk": ctx.partition_key},
        )
        con.execute(
            """UPDATE sync.ledger_items AS li
            SET status = CASE WHEN o.ok THEN 'acked' ELSE 'rejected' END, reason = o.reason,
                request_id = o.request_id, updated_at = $now
            FROM item_outcomes AS o
            WHERE li.sync_id = $sync_id AND li.segment = $segment AND li.destination = $destination
              AND li.member_key = o.member_key AND li.operation = o.operation""",
            key,
        )
        con.execute(
            """DELETE FROM sync.destination_state
            WHERE segment = $segment AND destination = $destination
              AND member_key IN (SELECT member_key FROM item_outcomes WHERE ok)""",
            {k: key[k] for k in ("segment", "destination")},
        )
        con.execute(
            """INSERT INTO sync.destination_state
            SELECT $segment, $destination, member_key, CAST(payload AS JSON), payload_hash, $now, request_id
            FROM item_outcomes WHERE ok AND operation <> 'remove'""",
            {k: key[k] for k in ("segment", "destination", "now")},
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("item_outcomes")
        con.unregister("request_outcomes")
    acked = int(outcomes["ok"].sum())
    return acked, len(outcomes) - acked


def run_sync(
    connect: Connect,
    segments: list[Segment],
    adapters: dict[str, DestinationAdapter],
    ctx: SyncContext,
    *,
    dry_run: bool,
    blocked: set[str],
    log: Callable[[str], None],
) -> list[DestinationReport]:
    """Sync every (segment, destination) of the given segments; returns what was planned, sent and acknowledged."""
    reports: list[DestinationReport] = []
    names = [s.name for s in segments if s.purpose == "target"]
    started = datetime.now(UTC).replace(tzinfo=None)
    with connect() as con:
        ensure_tables(con)
        # A previous run of these segments died between intent and ack: those items are simply planned again.
        # (Only these segments: the other cadence's sync may be sending right now.)
        con.execute(
            "UPDATE sync.ledger_items SET status = 'unacknowledged', updated_at = ? "
            "WHERE status = 'intent' AND segment IN (SELECT unnest(?::VARCHAR[]))",
            [started, names],
        )
        con.execute(
            "INSERT INTO sync.runs VALUES (?, ?, ?, ?, ?, NULL, 'running')",
            [ctx.sync_id, ctx.cadence, ctx.partition_key, dry_run, started],
        )
        compute_plan(con, names)
        # The newest plan per segment stays queryable (this is what a dry run "shows").
        con.execute(
            """DELETE FROM sync.last_plan WHERE segment IN (SELECT DISTINCT segment FROM sync_plan)
                OR segment IN (SELECT unnest($segments::VARCHAR[]))""",
            {"segments": names},
        )
        con.execute(
            "INSERT INTO sync.last_plan SELECT ?, segment, destination, member_key, operation, payload_hash, ?, ? "
            "FROM sync_plan",
            [ctx.sync_id, dry_run, started],
        )
        work = []
        for segment in (s for s in segments if s.name in names):
            for destination in segment.destinations:
                report = DestinationReport(segment.name, destination)
                reports.append(report)
                report.people, report.with_identifier = _coverage(con, segment.name, destination)
                if destination not in adapters:
                    report.skipped = "no adapter configured"
                    continue
                if segment.name in blocked:
                    report.skipped = "size guard blocked this segment"
                    continue
                changes = plan_changes(con, segment.name, destination)
                report.adds = sum(c.operation == "add" for c in changes)
                report.removes = sum(c.operation == "remove" for c in changes)
                report.updates = sum(c.operation == "update" for c in changes)
                report.expected_requests = adapters[destination].expected_requests(changes)
                if changes and not dry_run:
                    _record_intent(con, ctx, segment.name, destination, changes)
                    work.append((segment, destination, changes, report))
    for segment, destination, changes, report in work:
        log(f"{segment.name} → {destination}: +{report.adds} −{report.removes} ~{report.updates}")
        started_send = time.monotonic()
        result = adapters[destination].send(segment, changes, ctx)
        report.requests = len(result.requests)
        failed = [r for r in result.requests if not r.ok]
        report.failed_requests = len(failed)
        report.first_error = failed[0].error if failed else None
        with connect() as con:
            report.acked, report.rejected = _record_outcome(
                con, ctx, segment.name, destination, changes, result
            )
        log(
            f"{segment.name} → {destination}: {report.requests} request(s), {report.acked} acknowledged, "
            f"{report.rejected} rejected in {time.monotonic() - started_send:.1f}s"
        )
    with connect() as con:
        _write_coverage(con, reports, ctx)
        con.execute(
            "UPDATE sync.runs SET finished_at = ?, status = ? WHERE sync_id = ?",
            [datetime.now(UTC).replace(tzinfo=None), "dry_run" if dry_run else "done", ctx.sync_id],
        )
    return reports


def _write_coverage(con, reports: list[DestinationReport], ctx: SyncContext) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    for r in reports:
        acknowledged = con.execute(
            "SELECT count(*) FROM sync.destination_state WHERE segment = ? AND destination = ?",
            [r.segment, r.destination],
        ).fetchone()[0]
        con.execute(
            "DELETE FROM sync.coverage WHERE segment = ? AND destination = ? AND as_of = ?",
            [r.segment, r.destination, ctx.as_of.replace(tzinfo=None)],
        )
        con.execute(
            "INSERT INTO sync.coverage VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            [r.segment, r.destination, ctx.as_of.replace(tzinfo=None), r.people, r.with_identifier, acknowledged,
             100.0 * r.with_identifier / r.people if r.people else None, now],
        )  # fmt: skip


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_ad_destination(name: str) -> bool:
    return name in AD_DESTINATIONS
