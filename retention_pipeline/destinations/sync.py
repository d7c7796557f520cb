"""The delta-sync engine: desired state (DuckDB) − acknowledged state (DuckDB) → a plan → destination adapters →
ledger + new acknowledged state.

Crash safety is intent-then-ack: the plan's items are written to `sync.ledger_items` as `intent` before anything
is sent; only acknowledged items move `sync.destination_state`. A crash in between leaves the state untouched, so
the next run plans the same items again, and every send is idempotent at the destination (membership adds/removes,
messaging events with deterministic ids). Rejected items stay out of the state and are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pandas as pd

from retention_pipeline.destinations import registry
from retention_pipeline.destinations.identity import IDENTITY_MACROS_SQL
from retention_pipeline.destinations.plugin import (  # noqa: F401 (re-exported: the engine's vocabulary)
    Change,
    DestinationAdapter,
    ItemResult,
    RequestResult,
    SendResult,
    SyncContext,
)
from retention_pipeline.segments.project import Segment
from retention_pipeline.warehouse import transaction

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

DDL = """
CREATE SCHEMA IF NOT EXISTS sync;
CREATE TABLE IF NOT EXISTS sync.destination_state (
    segment VARCHAR NOT NULL, destination VARCHAR NOT NULL, member_key VARCHAR NOT NULL,
    payload JSON NOT NULL, payload_hash VARCHAR NOT NULL, acknowledged_at TIMESTAMP NOT NULL,
    request_id VARCHAR NOT NULL, target VARCHAR, customer_id VARCHAR
);
CREATE TABLE IF NOT EXISTS sync.ledger (
    request_id VARCHAR NOT NULL, sync_id VARCHAR NOT NULL, partition_key VARCHAR, segment VARCHAR NOT NULL,
    destination VARCHAR NOT NULL, operation VARCHAR NOT NULL, items INTEGER NOT NULL, status VARCHAR NOT NULL,
    http_status INTEGER, error VARCHAR, detail JSON, sent_at TIMESTAMP NOT NULL, target VARCHAR
);
CREATE TABLE IF NOT EXISTS sync.ledger_items (
    sync_id VARCHAR NOT NULL, request_id VARCHAR, segment VARCHAR NOT NULL, destination VARCHAR NOT NULL,
    member_key VARCHAR NOT NULL, operation VARCHAR NOT NULL, payload_hash VARCHAR NOT NULL,
    status VARCHAR NOT NULL, reason VARCHAR, updated_at TIMESTAMP NOT NULL, target VARCHAR
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
-- Files written before targets were recorded lack these columns.
ALTER TABLE sync.destination_state ADD COLUMN IF NOT EXISTS target VARCHAR;
ALTER TABLE sync.destination_state ADD COLUMN IF NOT EXISTS customer_id VARCHAR;
ALTER TABLE sync.ledger ADD COLUMN IF NOT EXISTS target VARCHAR;
ALTER TABLE sync.ledger_items ADD COLUMN IF NOT EXISTS target VARCHAR;
"""

# What this run reconciles: one row per (segment, destination) with the target its acknowledged state belongs to
# and a mode — `full` (desired state from the segment's latest partition) or `suppress_only` (only remove people
# who are suppressed now: an ad audience whose segment cannot be fully synced still loses suppressed people).
UNITS_DDL = """
CREATE OR REPLACE TEMP TABLE sync_units (
    segment VARCHAR NOT NULL, destination VARCHAR NOT NULL, target VARCHAR NOT NULL, mode VARCHAR NOT NULL
)
"""

# One row per (target, segment, destination, person): segments.audiences already applies the identity rule. A
# person's identifiers are the first usable email and phone among their contact rows (by customer_id), and their
# profile features come from their home account (the smallest customer_id), so every segment sends the same ones.
# Each destination's payload is its plug-in's `payload_sql` (normalized and hashed in DuckDB by the identity
# macros); raw email/phone never reach an ad payload.
DESIRED_SQL = """
CREATE OR REPLACE TEMP TABLE sync_desired AS
WITH routed AS (
    SELECT a.*, u.target FROM segments.audiences AS a JOIN sync_units AS u USING (segment, destination)
),
people AS (
    SELECT person_id, min(customer_id) AS home_customer_id,
           arg_min(norm_email(email_normalized), customer_id)
               FILTER (WHERE norm_email(email_normalized) IS NOT NULL) AS email,
           arg_min(phone_e164, customer_id) FILTER (WHERE phone_e164 IS NOT NULL) AS phone
    FROM raw.contacts
    WHERE person_id IN (SELECT person_id FROM routed)
    GROUP BY person_id
),
payloads AS (
    SELECT r.target, r.segment, r.destination, r.customer_id, r.person_id,
        CASE r.destination {payloads} END AS payload
    FROM routed AS r
    LEFT JOIN people AS p USING (person_id)
    LEFT JOIN analytics.customer_features AS f
        ON f.customer_id = p.home_customer_id AND f.cadence = r.cadence AND f.as_of = r.as_of
)
SELECT target, segment, destination, customer_id, person_id AS member_key, payload,
       md5(CAST(payload AS VARCHAR)) AS payload_hash
FROM payloads
"""


def desired_sql(destinations: list[str]) -> str:
    """DESIRED_SQL with one CASE branch per destination, each its plug-in's payload expression."""
    branches = "\n".join(
        f"WHEN '{name}' THEN ({registry.plugin(name).payload_sql.strip()}\n)"
        for name in sorted(set(destinations))
    )
    return DESIRED_SQL.format(payloads=branches or "WHEN NULL THEN NULL")


# People at a suppressed account (any of their accounts; the newest suppression of any cadence).
SUPPRESSED_PEOPLE = """
    SELECT DISTINCT person_id FROM raw.contacts
    WHERE person_id IS NOT NULL AND customer_id IN (SELECT customer_id FROM segments.suppressed)
"""

PLAN_SQL = f"""
CREATE OR REPLACE TEMP TABLE sync_plan AS
WITH desired AS (
    SELECT d.* FROM sync_desired AS d JOIN sync_units AS u USING (target, segment, destination)
    WHERE u.mode = 'full' AND d.payload IS NOT NULL AND d.member_key IS NOT NULL
),
state AS (
    SELECT s.*, u.mode FROM sync.destination_state AS s JOIN sync_units AS u USING (target, segment, destination)
),
suppressed_people AS ({SUPPRESSED_PEOPLE})
SELECT d.target, d.segment, d.destination, d.member_key, d.customer_id, 'add' AS operation, d.payload,
       d.payload_hash
FROM desired AS d ANTI JOIN state AS s USING (target, segment, destination, member_key)
UNION ALL
SELECT s.target, s.segment, s.destination, s.member_key, s.customer_id, 'remove', s.payload, s.payload_hash
FROM state AS s ANTI JOIN desired AS d USING (target, segment, destination, member_key)
WHERE s.mode = 'full'
   OR s.member_key IN (SELECT person_id FROM suppressed_people)
   OR s.customer_id IN (SELECT customer_id FROM segments.suppressed)
UNION ALL
SELECT d.target, d.segment, d.destination, d.member_key, d.customer_id, 'update', d.payload, d.payload_hash
FROM desired AS d JOIN state AS s USING (target, segment, destination, member_key)
WHERE d.payload_hash <> s.payload_hash
"""


@dataclass(frozen=True)
class SyncUnit:
    """One (segment, destination) this run reconciles, the target its state belongs to, and how."""

    segment: Segment
    destination: str
    target: str
    mode: str | None  # "full", "suppress_only", or None when skipped
    skipped: str | None = None


@dataclass
class DestinationReport:
    segment: str
    destination: str
    target: str = ""
    mode: str | None = None
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


def adopt_legacy_state(con: duckdb.DuckDBPyConnection) -> int:
    """State written before targets were recorded belongs to the targets this file is first bound to.

    Such files may also hold the duplicate rows the person_id-only key produced (one person in two accounts): they
    are collapsed to one row per key. Returns the legacy rows adopted."""
    legacy = con.execute("SELECT count(*) FROM sync.destination_state WHERE target IS NULL").fetchone()[0]
    if not legacy:
        return 0
    with transaction(con):
        con.execute(
            """UPDATE sync.destination_state AS s SET target = u.target
            FROM sync_units AS u WHERE s.target IS NULL AND s.segment = u.segment AND s.destination = u.destination"""
        )
        con.execute(
            """DELETE FROM sync.destination_state WHERE rowid NOT IN (
                SELECT min(rowid) FROM sync.destination_state GROUP BY target, segment, destination, member_key)"""
        )
    return legacy


def payload_hash(payload: dict) -> str:
    return hashlib.md5(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_units(con: duckdb.DuckDBPyConnection, units: list[SyncUnit]) -> None:
    con.execute(UNITS_DDL)
    frame = pd.DataFrame(
        [(u.segment.name, u.destination, u.target, u.mode or "skip") for u in units],
        columns=["segment", "destination", "target", "mode"],
    )
    con.register("units_in", frame)
    con.execute("INSERT INTO sync_units SELECT * FROM units_in")
    con.unregister("units_in")


def compute_plan(con: duckdb.DuckDBPyConnection, units: list[SyncUnit]) -> None:
    """sync_units, sync_desired and sync_plan (temp tables) for the given units; columnar, in DuckDB."""
    con.execute(IDENTITY_MACROS_SQL)
    write_units(con, units)
    con.execute(desired_sql([u.destination for u in units]))
    con.execute(PLAN_SQL)


def plan_changes(con: duckdb.DuckDBPyConnection, unit: SyncUnit) -> list[Change]:
    rows = con.execute(
        """SELECT p.member_key, p.operation, CAST(p.payload AS VARCHAR), p.payload_hash, CAST(s.payload AS VARCHAR),
                  p.customer_id
        FROM sync_plan AS p
        LEFT JOIN sync.destination_state AS s USING (target, segment, destination, member_key)
        WHERE p.target = ? AND p.segment = ? AND p.destination = ? ORDER BY p.operation, p.member_key""",
        [unit.target, unit.segment.name, unit.destination],
    ).fetchall()
    return [
        Change(
            key,
            op,
            json.loads(payload),
            digest,
            json.loads(previous) if previous and op == "update" else None,
            customer_id,
        )
        for key, op, payload, digest, previous, customer_id in rows
    ]


def _coverage(con: duckdb.DuckDBPyConnection, unit: SyncUnit) -> tuple[int, int]:
    return con.execute(
        "SELECT count(*), count(payload) FROM sync_desired WHERE target = ? AND segment = ? AND destination = ?",
        [unit.target, unit.segment.name, unit.destination],
    ).fetchone()


def _record_intent(con, ctx: SyncContext, unit: SyncUnit, changes: list[Change]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    frame = pd.DataFrame(
        [(c.member_key, c.operation, c.payload_hash) for c in changes],
        columns=["member_key", "operation", "payload_hash"],
    )
    con.register("intent_items", frame)
    con.execute(
        """INSERT INTO sync.ledger_items (sync_id, request_id, segment, destination, member_key, operation,
            payload_hash, status, reason, updated_at, target)
        SELECT ?, NULL, ?, ?, member_key, operation, payload_hash, 'intent', NULL, ?, ? FROM intent_items""",
        [ctx.sync_id, unit.segment.name, unit.destination, now, unit.target],
    )
    con.unregister("intent_items")


def _record_outcome(
    con, ctx: SyncContext, unit: SyncUnit, changes: list[Change], result: SendResult
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
                c.customer_id,
            )
            for i in result.items
            if (c := by_key.get((i.member_key, i.operation))) is not None
        ],
        columns=[
            "member_key",
            "operation",
            "ok",
            "reason",
            "request_id",
            "payload",
            "payload_hash",
            "customer_id",
        ],
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
    key = {"segment": unit.segment.name, "destination": unit.destination, "target": unit.target}
    try:
        with transaction(con):
            con.execute(
                """INSERT INTO sync.ledger (request_id, sync_id, partition_key, segment, destination, operation,
                    items, status, http_status, error, detail, sent_at, target)
                SELECT request_id, $sync_id, $pk, $segment, $destination, operation, items, status, http_status,
                       error, CAST(detail AS JSON), $now, $target
                FROM request_outcomes""",
                {**key, "sync_id": ctx.sync_id, "pk": ctx.partition_key, "now": now},
            )
            con.execute(
                """UPDATE sync.ledger_items AS li
                SET status = CASE WHEN o.ok THEN 'acked' ELSE 'rejected' END, reason = o.reason,
                    request_id = o.request_id, updated_at = $now
                FROM item_outcomes AS o
                WHERE li.sync_id = $sync_id AND li.segment = $segment AND li.destination = $destination
                  AND li.target = $target AND li.member_key = o.member_key AND li.operation = o.operation""",
                {**key, "sync_id": ctx.sync_id, "now": now},
            )
            con.execute(
                """DELETE FROM sync.destination_state
                WHERE segment = $segment AND destination = $destination AND target = $target
                  AND member_key IN (SELECT member_key FROM item_outcomes WHERE ok)""",
                key,
            )
            con.execute(
                """INSERT INTO sync.destination_state (segment, destination, member_key, payload, payload_hash,
                    acknowledged_at, request_id, target, customer_id)
                SELECT $segment, $destination, member_key, CAST(payload AS JSON), payload_hash, $now, request_id,
                       $target, customer_id
                FROM item_outcomes WHERE ok AND operation <> 'remove'""",
                {**key, "now": now},
            )
    finally:
        con.unregister("item_outcomes")
        con.unregister("request_outcomes")
    acked = int(outcomes["ok"].sum())
    return acked, len(outcomes) - acked


def run_sync(
    connect: Connect,
    units: list[SyncUnit],
    adapters: dict[str, DestinationAdapter],
    ctx: SyncContext,
    *,
    dry_run: bool,
    log: Callable[[str], None],
    on_sent: Callable[[duckdb.DuckDBPyConnection, SyncUnit, DestinationAdapter, SyncContext], SyncUnit | None]
    | None = None,
) -> list[DestinationReport]:
    """Reconcile every unit with its target; returns what was planned, sent and acknowledged per unit."""
    reports: list[DestinationReport] = []
    own = sorted({u.segment.name for u in units if u.segment.cadence == ctx.cadence})
    started = datetime.now(UTC).replace(tzinfo=None)
    with connect() as con:
        ensure_tables(con)
        # A previous run of these segments died between intent and ack: those items are simply planned again.
        # (Only this cadence's segments: the other cadence's sync may be sending right now.)
        con.execute(
            "UPDATE sync.ledger_items SET status = 'unacknowledged', updated_at = ? "
            "WHERE status = 'intent' AND segment IN (SELECT unnest(?::VARCHAR[]))",
            [started, own],
        )
        con.execute(
            "INSERT INTO sync.runs VALUES (?, ?, ?, ?, ?, NULL, 'running')",
            [ctx.sync_id, ctx.cadence, ctx.partition_key, dry_run, started],
        )
        write_units(con, units)
        adopted = adopt_legacy_state(con)
        if adopted:
            log(f"{adopted} acknowledged state rows written before targets were recorded now belong to this file's "
                "targets")  # fmt: skip
        compute_plan(con, units)
        # The newest plan per segment stays queryable (this is what a dry run "shows").
        con.execute(
            """DELETE FROM sync.last_plan WHERE segment IN (SELECT DISTINCT segment FROM sync_plan)
                OR segment IN (SELECT unnest($segments::VARCHAR[]))""",
            {"segments": own},
        )
        con.execute(
            "INSERT INTO sync.last_plan SELECT ?, segment, destination, member_key, operation, payload_hash, ?, ? "
            "FROM sync_plan",
            [ctx.sync_id, dry_run, started],
        )
        work = []
        for unit in units:
            report = DestinationReport(
                unit.segment.name, unit.destination, unit.target, unit.mode, skipped=unit.skipped
            )
            reports.append(report)
            report.people, report.with_identifier = _coverage(con, unit)
            if unit.mode is None:
                continue
            if unit.destination not in adapters:
                report.skipped = "no adapter configured"
                continue
            changes = plan_changes(con, unit)
            report.adds = sum(c.operation == "add" for c in changes)
            report.removes = sum(c.operation == "remove" for c in changes)
            report.updates = sum(c.operation == "update" for c in changes)
            report.expected_requests = adapters[unit.destination].expected_requests(changes)
            if changes and not dry_run:
                _record_intent(con, ctx, unit, changes)
                work.append((unit, changes, report))
    for unit, changes, report in work:
        name = f"{unit.segment.name} → {unit.destination}"
        log(f"{name}: +{report.adds} −{report.removes} ~{report.updates}"
            + (" (suppression only)" if unit.mode == "suppress_only" else ""))  # fmt: skip
        started_send = time.monotonic()
        result = adapters[unit.destination].send(unit.segment, changes, ctx)
        report.requests = len(result.requests)
        failed = [r for r in result.requests if not r.ok]
        report.failed_requests = len(failed)
        report.first_error = failed[0].error if failed else None
        with connect() as con:
            if on_sent is not None:
                # e.g. an object the send created: recorded, and the unit re-keyed to it, before any ack lands.
                unit = on_sent(con, unit, adapters[unit.destination], ctx) or unit
                report.target = unit.target
            report.acked, report.rejected = _record_outcome(con, ctx, unit, changes, result)
        log(
            f"{name}: {report.requests} request(s), {report.acked} acknowledged, "
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
        if r.mode != "full":
            continue  # coverage describes a segment synced from its own partition
        acknowledged = con.execute(
            "SELECT count(*) FROM sync.destination_state WHERE segment = ? AND destination = ? AND target = ?",
            [r.segment, r.destination, r.target],
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


@dataclass
class StateChecks:
    """What the acknowledged state holds that it must not (verified after every sync)."""

    duplicate_keys: int
    suppressed_in_ads: int | None  # None: current suppression could not be established
    holdout_outbound: int


def check_state(
    con: duckdb.DuckDBPyConnection, units: list[SyncUnit], suppression_known: bool
) -> StateChecks:
    """Verify `sync.destination_state` itself — what destinations acknowledged — not the routing view."""
    write_units(con, units)
    duplicates = con.execute(
        """SELECT count(*) FROM (SELECT 1 FROM sync.destination_state
        GROUP BY target, segment, destination, member_key HAVING count(*) > 1)"""
    ).fetchone()[0]
    ads = list(registry.ad_names())
    suppressed = None
    if suppression_known:
        suppressed = con.execute(
            f"""WITH suppressed_people AS ({SUPPRESSED_PEOPLE})
            SELECT count(*) FROM sync.destination_state AS s JOIN sync_units AS u USING (target, segment, destination)
            WHERE s.destination IN (SELECT unnest($ads::VARCHAR[]))
              AND (s.member_key IN (SELECT person_id FROM suppressed_people)
                   OR s.customer_id IN (SELECT customer_id FROM segments.suppressed))""",
            {"ads": ads},
        ).fetchone()[0]
    # Holdout people at the latest partition of the segments this run synced from their own partition.
    holdout = con.execute(
        """WITH latest AS (SELECT segment, max(as_of) AS as_of FROM segments.partitions GROUP BY segment),
        held_out AS (
            SELECT DISTINCT m.segment, m.person_id FROM segments.members AS m JOIN latest USING (segment, as_of)
            WHERE m.is_holdout AND m.person_id IS NOT NULL
        )
        SELECT count(*) FROM sync.destination_state AS s
        JOIN sync_units AS u USING (target, segment, destination)
        JOIN held_out AS h ON h.segment = s.segment AND h.person_id = s.member_key
        WHERE u.mode = 'full'"""
    ).fetchone()[0]
    return StateChecks(duplicates, suppressed, holdout)


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
