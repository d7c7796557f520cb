"""Computes every segment of one cadence partition inside DuckDB: rule → exclusions → people → holdout →
changes → size guard, in one transaction, so a partition is always all old or all new.

Python only sequences statements; membership logic is SQL (the segment files and the statements below).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from graphlib import TopologicalSorter

import duckdb

from retention_pipeline.segments.project import AD_DESTINATIONS, SUPPRESSION_SEGMENT, Segment

DDL = """
CREATE SCHEMA IF NOT EXISTS segments;
CREATE TABLE IF NOT EXISTS segments.members (
    segment VARCHAR NOT NULL, cadence VARCHAR NOT NULL, partition_key VARCHAR NOT NULL, as_of TIMESTAMP NOT NULL,
    customer_id VARCHAR NOT NULL, person_id VARCHAR, tier VARCHAR, is_holdout BOOLEAN NOT NULL, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS segments.changes (
    segment VARCHAR NOT NULL, cadence VARCHAR NOT NULL, partition_key VARCHAR NOT NULL, as_of TIMESTAMP NOT NULL,
    previous_as_of TIMESTAMP, customer_id VARCHAR NOT NULL, change VARCHAR NOT NULL, tier VARCHAR, reason VARCHAR
);
CREATE TABLE IF NOT EXISTS segments.partitions (
    segment VARCHAR NOT NULL, cadence VARCHAR NOT NULL, partition_key VARCHAR NOT NULL, as_of TIMESTAMP NOT NULL,
    accounts INTEGER NOT NULL, people INTEGER NOT NULL, holdout_accounts INTEGER NOT NULL,
    entries INTEGER NOT NULL, exits INTEGER NOT NULL, previous_as_of TIMESTAMP, previous_accounts INTEGER,
    change_pct DOUBLE, guard_status VARCHAR NOT NULL, guard_reason VARCHAR, computed_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS segments.definitions (
    segment VARCHAR NOT NULL, cadence VARCHAR NOT NULL, purpose VARCHAR NOT NULL, destinations VARCHAR[],
    exclude VARCHAR[], holdout_pct DOUBLE, min_size INTEGER, max_change_pct DOUBLE, description VARCHAR,
    sql VARCHAR
);
"""

# Holdout bucket 0–99 from md5(segment:customer_id): stable across runs and DuckDB versions, shared by every
# person of an account.
HOLDOUT_BUCKET = "CAST(('0x' || left(md5(? || ':' || customer_id), 8)) AS UBIGINT) % 100"

# What would be sent where (before identifier checks): the latest partition of every target segment, minus
# holdout; for ad destinations also minus the latest do_not_retarget accounts and people without marketing consent.
AUDIENCES_VIEW = f"""
CREATE OR REPLACE VIEW segments.audiences AS
WITH latest AS (
    SELECT segment, max(as_of) AS as_of FROM segments.partitions GROUP BY segment
),
members AS (
    SELECT m.* FROM segments.members AS m JOIN latest USING (segment, as_of)
),
suppressed AS (
    SELECT DISTINCT customer_id FROM members WHERE segment = '{SUPPRESSION_SEGMENT}'
),
routes AS (
    SELECT segment, unnest(destinations) AS destination FROM segments.definitions WHERE purpose = 'target'
)
SELECT m.segment, r.destination, m.cadence, m.partition_key, m.as_of, m.customer_id, m.person_id, m.tier, m.reason
FROM members AS m
JOIN routes AS r USING (segment)
LEFT JOIN raw.contacts AS c ON c.customer_id = m.customer_id AND c.person_id = m.person_id
WHERE NOT m.is_holdout
  AND (r.destination NOT IN {AD_DESTINATIONS}
       OR (m.customer_id NOT IN (SELECT customer_id FROM suppressed) AND coalesce(c.marketing_consent, false)))
"""


class SegmentRunError(RuntimeError):
    """A segment could not be computed; the message names the segment."""


@dataclass
class SegmentStats:
    segment: str
    accounts: int
    people: int
    holdout_accounts: int
    entries: int
    exits: int
    previous_accounts: int | None
    change_pct: float | None
    guard_status: str
    guard_reason: str | None

    @property
    def blocked(self) -> bool:
        return self.guard_status.startswith("blocked")


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)
    con.execute(AUDIENCES_VIEW)


def write_definitions(con: duckdb.DuckDBPyConnection, segments: list[Segment]) -> None:
    """segments.definitions mirrors the files, so analysts (and the audiences view) see the live config."""
    con.execute("DELETE FROM segments.definitions")
    con.executemany(
        "INSERT INTO segments.definitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (s.name, s.cadence, s.purpose, list(s.destinations), list(s.exclude), s.holdout_pct, s.min_size,
             s.max_change_pct, s.description, s.sql())
            for s in segments
        ],
    )  # fmt: skip


def execution_order(segments: list[Segment]) -> list[Segment]:
    """Segments excluded by others of the same cadence are computed first."""
    by_name = {s.name: s for s in segments}
    graph = {s.name: {e for e in s.exclude if e in by_name} for s in segments}
    return [by_name[n] for n in TopologicalSorter(graph).static_order()]


def _guard(
    segment: Segment, accounts: int, previous: int | None, override: bool
) -> tuple[str, str | None, float | None]:
    change_pct = None if not previous else 100.0 * abs(accounts - previous) / previous
    reason = None
    if previous is not None and previous > 0 and accounts == 0:
        reason = f"fell to 0 from {previous}"
    elif accounts < segment.min_size:
        reason = f"{accounts} accounts is below min_size {segment.min_size}"
    elif (
        change_pct is not None
        and change_pct > segment.max_change_pct
        and abs(accounts - previous) >= segment.guard_min_accounts
    ):
        reason = f"changed {change_pct:.0f}% ({previous} → {accounts}), above max_change_pct {segment.max_change_pct:g}"
    if reason is None:
        return "ok", None, change_pct
    if override:
        return "overridden", reason, change_pct
    return "blocked", reason, change_pct


def _segment_rows_sql(con: duckdb.DuckDBPyConnection, segment: Segment) -> str:
    """The segment's SELECT with tier/reason added when it does not return them; fails naming the segment."""
    sql = segment.sql()
    try:
        columns = [row[0] for row in con.execute(f"DESCRIBE ({sql})").fetchall()]
    except duckdb.Error as exc:
        raise SegmentRunError(f"segment {segment.name} ({segment.path.name}) failed: {exc}") from exc
    if "customer_id" not in columns:
        raise SegmentRunError(
            f"segment {segment.name} ({segment.path.name}) must return a customer_id column"
        )
    tier = "CAST(tier AS VARCHAR)" if "tier" in columns else "NULL::VARCHAR"
    reason = "CAST(reason AS VARCHAR)" if "reason" in columns else "NULL::VARCHAR"
    return (
        f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, {tier} AS tier, {reason} AS reason FROM ({sql}) "
        "WHERE customer_id IS NOT NULL QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY tier, reason) = 1"
    )


def compute_partition(
    con: duckdb.DuckDBPyConnection,
    segments: list[Segment],
    cadence: str,
    partition_key: str,
    as_of: datetime,
    override: set[str] | None = None,
    computed_at: datetime | None = None,
) -> list[SegmentStats]:
    """Replace the partition's rows of every segment of `cadence`; returns per-segment stats and guard status.

    Requires analytics.customer_features rows for (cadence, as_of) and raw.contacts. The session variables
    `cadence` and `as_of` must be set (retention_pipeline.models.assets.set_run_variables)."""
    override = override or set()
    as_of = as_of.replace(tzinfo=None)
    computed_at = (computed_at or datetime.now()).replace(tzinfo=None)
    mine = execution_order([s for s in segments if s.cadence == cadence])
    ensure_tables(con)
    con.execute(
        "CREATE OR REPLACE TEMP VIEW features AS SELECT * FROM analytics.customer_features "
        "WHERE cadence = getvariable('cadence') AND as_of = getvariable('as_of')"
    )
    stats = []
    try:
        con.execute("BEGIN TRANSACTION")
        write_definitions(con, segments)
        for segment in mine:
            stats.append(_compute_one(con, segment, cadence, partition_key, as_of, override, computed_at))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return stats


def _compute_one(
    con: duckdb.DuckDBPyConnection,
    segment: Segment,
    cadence: str,
    partition_key: str,
    as_of: datetime,
    override: set[str],
    computed_at: datetime,
) -> SegmentStats:
    key = [segment.name, cadence, partition_key]
    con.execute(f"CREATE OR REPLACE TEMP TABLE segment_accounts AS {_segment_rows_sql(con, segment)}")
    for other in segment.exclude:
        # The excluded segment's latest partition at or before this as_of (it may have another cadence).
        con.execute(
            """DELETE FROM segment_accounts WHERE customer_id IN (
                SELECT m.customer_id FROM segments.members AS m
                WHERE m.segment = $seg AND m.as_of = (
                    SELECT max(as_of) FROM segments.partitions WHERE segment = $seg AND as_of <= $as_of))""",
            {"seg": other, "as_of": as_of},
        )
    for table in ("members", "changes", "partitions"):
        con.execute(
            f"DELETE FROM segments.{table} WHERE segment = ? AND cadence = ? AND partition_key = ?", key
        )
    con.execute(
        f"""INSERT INTO segments.members
        SELECT ?, ?, ?, ?, a.customer_id, c.person_id, a.tier, {HOLDOUT_BUCKET} < ?, a.reason
        FROM segment_accounts AS a LEFT JOIN raw.contacts AS c USING (customer_id)""",
        [*key, as_of, segment.name, segment.holdout_pct],
    )
    previous = con.execute(
        "SELECT as_of, accounts FROM segments.partitions WHERE segment = ? AND as_of < ? ORDER BY as_of DESC LIMIT 1",
        [segment.name, as_of],
    ).fetchone()
    previous_as_of, previous_accounts = previous if previous else (None, None)
    con.execute(
        """INSERT INTO segments.changes
        WITH now_in AS (SELECT DISTINCT customer_id, tier, reason FROM segments.members
                        WHERE segment = $seg AND as_of = $as_of),
             before AS (SELECT DISTINCT customer_id, tier, reason FROM segments.members
                        WHERE segment = $seg AND as_of = $prev)
        SELECT $seg, $cadence, $pk, $as_of, $prev, customer_id, 'entered', tier, reason
        FROM now_in WHERE customer_id NOT IN (SELECT customer_id FROM before)
        UNION ALL
        SELECT $seg, $cadence, $pk, $as_of, $prev, customer_id, 'exited', tier, reason
        FROM before WHERE customer_id NOT IN (SELECT customer_id FROM now_in)""",
        {
            "seg": segment.name,
            "cadence": cadence,
            "pk": partition_key,
            "as_of": as_of,
            "prev": previous_as_of,
        },
    )
    accounts, people, holdout = con.execute(
        """SELECT count(DISTINCT customer_id), count(person_id), count(DISTINCT customer_id) FILTER (WHERE is_holdout)
        FROM segments.members WHERE segment = ? AND as_of = ?""",
        [segment.name, as_of],
    ).fetchone()
    entries, exits = con.execute(
        "SELECT count(*) FILTER (WHERE change = 'entered'), count(*) FILTER (WHERE change = 'exited') "
        "FROM segments.changes WHERE segment = ? AND as_of = ?",
        [segment.name, as_of],
    ).fetchone()
    status, reason, change_pct = _guard(
        segment, accounts, previous_accounts, segment.name in override or "*" in override
    )
    con.execute(
        "INSERT INTO segments.partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [*key, as_of, accounts, people, holdout, entries, exits, previous_as_of, previous_accounts, change_pct,
         status, reason, computed_at],
    )  # fmt: skip
    return SegmentStats(segment.name, accounts, people, holdout, entries, exits, previous_accounts, change_pct,
                        status, reason)  # fmt: skip
