"""Computes every segment of one cadence partition inside DuckDB: rule → exclusions → people → holdout →
changes → size guard, in one transaction, so a partition is always all old or all new.

A segment whose rule fails on the data (a cast, a division) does not hold back its siblings: every rule is
evaluated into a temp table before the transaction opens (DuckDB aborts a whole transaction on any error and has no
savepoints), and a failed segment — or one excluding a failed segment — writes no partition, only a row in
`segments.errors`, so the sync keeps treating its previous partition as current-but-stale.

Python only sequences statements; membership logic is SQL (the segment files and the statements below).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from graphlib import TopologicalSorter

import duckdb

from retention_pipeline.destinations import registry
from retention_pipeline.models.quality import is_overridden
from retention_pipeline.redact import redact
from retention_pipeline.segments.project import (
    Segment,
    create_features_view,
    readable_columns,
)
from retention_pipeline.warehouse import transaction

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
CREATE TABLE IF NOT EXISTS segments.errors (
    segment VARCHAR NOT NULL, cadence VARCHAR NOT NULL, partition_key VARCHAR NOT NULL, as_of TIMESTAMP NOT NULL,
    error VARCHAR NOT NULL, computed_at TIMESTAMP NOT NULL
);
"""

# Holdout bucket 0–99 from md5(segment:customer_id): stable across runs and DuckDB versions, shared by every
# person of an account.
HOLDOUT_BUCKET = "CAST(('0x' || left(md5(? || ':' || customer_id), 8)) AS UBIGINT) % 100"


def members_sql(accounts_table: str) -> str:
    """segments.members rows from a segment's accounts: one per contact of each account (person_id NULL when it
    has none), holdout by HOLDOUT_BUCKET. Parameters: segment, cadence, partition_key, as_of, segment, holdout_pct."""
    return f"""SELECT ?, ?, ?, ?, a.customer_id, c.person_id, a.tier, {HOLDOUT_BUCKET} < ?, a.reason
        FROM {accounts_table} AS a LEFT JOIN raw.contacts AS c USING (customer_id)"""


# What would be sent where (before identifier checks), one row per segment × destination × person. The identity
# rule for a person listed under several accounts (docs/reference.md, "The identity rule"):
# - the person is a member when any of their accounts is; tier, reason and the attributed `customer_id` come from
#   their primary account in the segment: tier 'high' first, then the smallest customer_id;
# - held out when any of their member accounts is held out (holdout is never contaminated);
# - for ad destinations: excluded when any of their accounts is currently suppressed (the newest partition of every
#   suppress segment, whichever cadence computed it), and only with marketing consent on every one of their rows.
# Accounts without contacts keep one row with person_id NULL (counted for coverage, never sent).
# `members` has one row per segment × account × person (segment, cadence, partition_key, as_of, customer_id,
# person_id, tier, reason, is_holdout); `routes` one row per target segment × destination. The view reads the latest
# partitions and the live definitions; a preview passes a segment's uncommitted rows and its routes from the file.
def audiences_query(members: str, routes: str) -> str:
    return f"""
WITH members AS ({members}),
ranked AS (
    SELECT *,
        bool_or(is_holdout) OVER person AS person_held_out,
        count(*) OVER person AS person_accounts,
        row_number() OVER (person ORDER BY CASE tier WHEN 'high' THEN 0 ELSE 1 END, customer_id) AS rank
    FROM members
    WINDOW person AS (PARTITION BY segment, coalesce(person_id, '\x00account:' || customer_id))
),
suppressed_people AS (
    SELECT DISTINCT c.person_id FROM raw.contacts AS c
    WHERE c.person_id IS NOT NULL AND c.customer_id IN (SELECT customer_id FROM segments.suppressed)
),
consent AS (
    SELECT person_id, bool_and(coalesce(marketing_consent, false)) AS granted FROM raw.contacts GROUP BY person_id
),
routes AS ({routes}),
policy AS ({registry.policy_sql()})
SELECT r.segment, rt.destination, r.cadence, r.partition_key, r.as_of, r.customer_id, r.person_id, r.tier,
       r.reason, r.person_accounts
FROM ranked AS r
JOIN routes AS rt USING (segment)
LEFT JOIN policy AS pol USING (destination)
LEFT JOIN consent AS c USING (person_id)
WHERE r.rank = 1 AND NOT r.person_held_out
  -- A destination the registry does not know gets the strictest policy (suppressed, consent required).
  AND (NOT coalesce(pol.suppression_applies, true)
       OR (r.person_id NOT IN (SELECT person_id FROM suppressed_people)
           AND r.customer_id NOT IN (SELECT customer_id FROM segments.suppressed)))
  AND (NOT coalesce(pol.consent_required, true) OR coalesce(c.granted, false))
"""


LATEST_TARGET_MEMBERS = """
    SELECT DISTINCT m.segment, m.cadence, m.partition_key, m.as_of, m.customer_id, m.person_id, m.tier,
           m.reason, m.is_holdout
    FROM segments.members AS m JOIN (
        SELECT p.segment, max(p.as_of) AS as_of
        FROM segments.partitions AS p JOIN segments.definitions AS d USING (segment)
        WHERE d.purpose = 'target' GROUP BY p.segment
    ) AS latest USING (segment, as_of)"""
DEFINED_ROUTES = (
    "SELECT segment, unnest(destinations) AS destination FROM segments.definitions WHERE purpose = 'target'"
)


def audiences_view_sql() -> str:
    """The routing views, built from the registry's current destinations (so a registered plug-in is routed)."""
    return f"""
CREATE OR REPLACE VIEW segments.suppressed AS
WITH newest AS (
    SELECT p.segment, max(p.as_of) AS as_of
    FROM segments.partitions AS p JOIN segments.definitions AS d USING (segment)
    WHERE d.purpose = 'suppress' GROUP BY p.segment
)
SELECT DISTINCT m.segment, m.as_of, m.customer_id, m.reason
FROM segments.members AS m JOIN newest USING (segment, as_of);

CREATE OR REPLACE VIEW segments.audiences AS
{audiences_query(LATEST_TARGET_MEMBERS, DEFINED_ROUTES)}
"""


@dataclass(frozen=True)
class SuppressionStatus:
    """How current the global suppression is: the instant every suppress segment is known as of, or why not."""

    as_of: datetime | None
    problem: str | None = None

    def covers(self, as_of: datetime | None) -> str | None:
        """None when suppression is established for data as of `as_of`, else why it is not."""
        if self.problem:
            return self.problem
        if as_of is not None and (self.as_of is None or self.as_of < as_of.replace(tzinfo=None)):
            return (
                f"suppression is as of {self.as_of:%Y-%m-%d %H:%M}, older than the segment's data "
                f"({as_of:%Y-%m-%d %H:%M})"
            )
        return None


def suppression_status(con: duckdb.DuckDBPyConnection) -> SuppressionStatus:
    """The newest partition of every suppress segment must exist and must not be held by its size guard."""
    rows = con.execute(
        """WITH newest AS (SELECT segment, max(as_of) AS as_of FROM segments.partitions GROUP BY segment)
        SELECT d.segment, n.as_of,
               (SELECT string_agg(p.guard_reason, '; ') FROM segments.partitions AS p
                WHERE p.segment = d.segment AND p.as_of = n.as_of AND p.guard_status = 'blocked')
        FROM segments.definitions AS d LEFT JOIN newest AS n USING (segment)
        WHERE d.purpose = 'suppress' ORDER BY d.segment"""
    ).fetchall()
    if not rows:
        return SuppressionStatus(None, "no suppress segment has been computed yet")
    missing = [segment for segment, as_of, _ in rows if as_of is None]
    if missing:
        return SuppressionStatus(None, f"{', '.join(missing)} has never been computed")
    blocked = [f"{segment} is held by its size guard ({why})" for segment, _, why in rows if why]
    if blocked:
        return SuppressionStatus(None, "; ".join(blocked) + " — review it and re-run with override_guard")
    return SuppressionStatus(min(as_of for _, as_of, _ in rows))


class SegmentRunError(RuntimeError):
    """A segment could not be computed; the message names the segment."""


FAILED = "failed"  # guard_status of a segment that could not be computed for the partition
# guard_status of a segment not computed because a partitioned table it reads (a model score) has no rows for the
# partition; like `failed` it writes no partition, so its previous one stays current, but it is expected and says why.
SKIPPED = "skipped"


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
        """Held from activation: by its guard, or because it could not be computed (`failed`, `skipped`)."""
        return self.guard_status.startswith("blocked") or self.guard_status in (FAILED, SKIPPED)

    @property
    def computed(self) -> bool:
        return self.guard_status not in (FAILED, SKIPPED)

    @classmethod
    def failure(cls, segment: str, error: str, status: str = FAILED) -> SegmentStats:
        return cls(segment, 0, 0, 0, 0, 0, None, None, status, error)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)
    con.execute(audiences_view_sql())


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


def segments_of_cadence(segments: list[Segment], cadence: str) -> list[Segment]:
    """The segments a cadence's partition computes: its own, plus every suppress segment.

    Suppression is evaluated by every cadence as of that cadence's own instant, so a sync never has to rely on
    suppression older than the data it is about to send (a daily run needs no hourly partition to exist)."""
    return [s for s in segments if s.cadence == cadence or s.purpose == "suppress"]


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


def _test_gate(
    status: str, reason: str | None, failing_tests: dict[str, str], override: set[str]
) -> tuple[str, str | None]:
    """Failing ERROR data tests block a target segment like a size swing does; naming a test (or "*") in
    override_guard accepts it after review."""
    failing = {name: what for name, what in failing_tests.items() if not is_overridden(name, override)}
    if failing:
        why = "; ".join(f"data test {what}" for what in failing.values())
        return "blocked", why if reason is None or status == "overridden" else f"{why}; {reason}"
    if failing_tests and status == "ok":
        return "overridden", "; ".join(f"data test {what}" for what in failing_tests.values())
    return status, reason


def segment_error(con: duckdb.DuckDBPyConnection, segment: Segment, error: duckdb.Error) -> str:
    """A DuckDB error on the segment's SQL as `segments/<file>:<line>: <what>`; data values it quotes redacted."""
    return redact(segment.describe_error(str(error), readable_columns(con, segment)))


def segment_rows_sql(con: duckdb.DuckDBPyConnection, segment: Segment) -> str:
    """The segment's SELECT with tier/reason added when it does not return them; fails naming the file."""
    sql = segment.sql()
    try:
        columns = [row[0] for row in con.execute(f"DESCRIBE ({sql})").fetchall()]
    except duckdb.Error as exc:
        raise SegmentRunError(segment_error(con, segment, exc)) from exc
    if "customer_id" not in columns:
        raise SegmentRunError(f"{segment.at()}: must return a customer_id column")
    tier = "CAST(tier AS VARCHAR)" if "tier" in columns else "NULL::VARCHAR"
    reason = "CAST(reason AS VARCHAR)" if "reason" in columns else "NULL::VARCHAR"
    return (
        f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, {tier} AS tier, {reason} AS reason FROM ({sql}) "
        "WHERE customer_id IS NOT NULL QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY tier, reason) = 1"
    )


def evaluate_rule(con: duckdb.DuckDBPyConnection, segment: Segment, table: str) -> None:
    """The segment's accounts (customer_id, tier, reason) for the session's partition into temp table `table`;
    raises SegmentRunError naming the file when the rule fails on the data."""
    sql = segment_rows_sql(con, segment)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}")
    except duckdb.Error as exc:
        raise SegmentRunError(segment_error(con, segment, exc)) from exc


def exclude_members(con: duckdb.DuckDBPyConnection, segment: Segment, table: str, as_of: datetime) -> None:
    """Remove from `table` the members of every segment this one excludes: each excluded segment's latest
    partition at or before as_of (it may have another cadence)."""
    for other in segment.exclude:
        con.execute(
            f"""DELETE FROM {table} WHERE customer_id IN (
                SELECT m.customer_id FROM segments.members AS m
                WHERE m.segment = $seg AND m.as_of = (
                    SELECT max(as_of) FROM segments.partitions WHERE segment = $seg AND as_of <= $as_of))""",
            {"seg": other, "as_of": as_of},
        )


def missing_inputs(
    con: duckdb.DuckDBPyConnection, segment: Segment, cadence: str, as_of: datetime
) -> str | None:
    """Why the segment cannot be computed for the partition, or None: a partitioned table it reads (one with
    `cadence` and `as_of` columns, e.g. analytics.churn_scores) holds no rows for (cadence, as_of). Reading it anyway
    would give an empty segment, and an empty partition would remove everyone from its audiences."""
    for table in sorted(segment.refs):
        schema, _, name = table.rpartition(".")
        columns = {
            c
            for (c,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
                [schema or "main", name],
            ).fetchall()
        }
        if not {"cadence", "as_of"} <= columns:
            continue
        rows = con.execute(
            f"SELECT count(*) FROM {table} WHERE cadence = ? AND as_of = ?", [cadence, as_of]
        ).fetchone()[0]
        if not rows:
            return (
                f"{segment.at()}: skipped: it reads {table}, which has no rows for {cadence} as_of "
                f"{as_of:%Y-%m-%d %H:%M} (its asset's log says why, e.g. no model trained yet); the previous "
                "partition stays current"
            )
    return None


def compute_partition(
    con: duckdb.DuckDBPyConnection,
    segments: list[Segment],
    cadence: str,
    partition_key: str,
    as_of: datetime,
    override: set[str] | None = None,
    computed_at: datetime | None = None,
    failing_tests: dict[str, str] | None = None,
) -> list[SegmentStats]:
    """Replace the partition's rows of every segment of `cadence`; returns per-segment stats and guard status.

    A segment whose rule fails on the data, or that excludes one that failed, gets guard_status `failed` (the reason
    names its file and line), no partition and a row in segments.errors; the others are computed as usual.

    `failing_tests` ("model.test" → what failed) are ERROR data tests failing upstream of the features: every target
    segment of the partition is blocked from activation until they pass or are named in `override`.

    Requires analytics.customer_features rows for (cadence, as_of) and raw.contacts. The session variables
    `cadence` and `as_of` must be set (retention_pipeline.models.assets.set_run_variables)."""
    override = override or set()
    failing_tests = failing_tests or {}
    as_of = as_of.replace(tzinfo=None)
    computed_at = (computed_at or datetime.now()).replace(tzinfo=None)
    mine = execution_order(segments_of_cadence(segments, cadence))
    ensure_tables(con)
    create_features_view(con, "analytics.customer_features")
    # Rules first, outside the transaction: a rule failing on the data cannot abort its siblings' partition.
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    for segment in mine:
        missing = missing_inputs(con, segment, cadence, as_of)
        if missing:
            failed[segment.name] = missing
            skipped.add(segment.name)
            continue
        failed_exclusion = next((e for e in segment.exclude if e in failed), None)
        if failed_exclusion:
            failed[segment.name] = (
                f"{segment.at(header_field='exclude')}: not computed: it excludes {failed_exclusion}, which "
                f"failed ({failed[failed_exclusion]})"
            )
            continue
        try:
            evaluate_rule(con, segment, _rule_table(segment))
        except SegmentRunError as exc:
            failed[segment.name] = str(exc)
    stats = []
    try:
        with transaction(con):
            write_definitions(con, segments)
            for segment in mine:
                if segment.name in failed:
                    _record_failure(
                        con, segment, cadence, partition_key, as_of, failed[segment.name], computed_at
                    )
                    status = SKIPPED if segment.name in skipped else FAILED
                    stats.append(SegmentStats.failure(segment.name, failed[segment.name], status))
                else:
                    stats.append(
                        _compute_one(
                            con, segment, cadence, partition_key, as_of, override, computed_at, failing_tests
                        )
                    )
    finally:
        for segment in mine:
            con.execute(f"DROP TABLE IF EXISTS {_rule_table(segment)}")
    return stats


def _rule_table(segment: Segment) -> str:
    return f"segment_rule_{segment.name}"  # segment names are snake_case identifiers


def _record_failure(
    con: duckdb.DuckDBPyConnection,
    segment: Segment,
    cadence: str,
    partition_key: str,
    as_of: datetime,
    error: str,
    computed_at: datetime,
) -> None:
    """No partition for a failed segment (the newest partition is what activation and suppression read, and an
    empty one would remove everyone): its rows for the key go, and the error is kept in segments.errors."""
    key = [segment.name, cadence, partition_key]
    for table in ("members", "changes", "partitions", "errors"):
        con.execute(
            f"DELETE FROM segments.{table} WHERE segment = ? AND cadence = ? AND partition_key = ?", key
        )
    con.execute("INSERT INTO segments.errors VALUES (?, ?, ?, ?, ?, ?)", [*key, as_of, error, computed_at])


def _compute_one(
    con: duckdb.DuckDBPyConnection,
    segment: Segment,
    cadence: str,
    partition_key: str,
    as_of: datetime,
    override: set[str],
    computed_at: datetime,
    failing_tests: dict[str, str],
) -> SegmentStats:
    key = [segment.name, cadence, partition_key]
    accounts_table = _rule_table(segment)
    # Exclusions inside the transaction: an excluded segment of this cadence was just written above.
    exclude_members(con, segment, accounts_table, as_of)
    for table in ("members", "changes", "partitions", "errors"):
        con.execute(
            f"DELETE FROM segments.{table} WHERE segment = ? AND cadence = ? AND partition_key = ?", key
        )
    con.execute(
        f"INSERT INTO segments.members {members_sql(accounts_table)}",
        [*key, as_of, segment.name, segment.holdout_pct],
    )
    # The partition just before this one in the same cadence: a suppress segment, computed by every cadence, has one
    # consistent series per cadence (measurement reads the series of its declared cadence).
    previous = con.execute(
        "SELECT as_of, accounts, cadence, partition_key FROM segments.partitions WHERE segment = ? AND cadence = ? "
        "AND as_of < ? ORDER BY as_of DESC LIMIT 1",
        [segment.name, cadence, as_of],
    ).fetchone()
    previous_as_of, previous_accounts, previous_cadence, previous_key = previous if previous else (None,) * 4
    con.execute(
        """INSERT INTO segments.changes
        WITH now_in AS (SELECT DISTINCT customer_id, tier, reason FROM segments.members
                        WHERE segment = $seg AND cadence = $cadence AND partition_key = $pk),
             before AS (SELECT DISTINCT customer_id, tier, reason FROM segments.members
                        WHERE segment = $seg AND cadence = $prev_cadence AND partition_key = $prev_pk)
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
            "prev_cadence": previous_cadence,
            "prev_pk": previous_key,
        },
    )
    accounts, people, holdout = con.execute(
        """SELECT count(DISTINCT customer_id), count(person_id), count(DISTINCT customer_id) FILTER (WHERE is_holdout)
        FROM segments.members WHERE segment = ? AND cadence = ? AND partition_key = ?""",
        key,
    ).fetchone()
    entries, exits = con.execute(
        "SELECT count(*) FILTER (WHERE change = 'entered'), count(*) FILTER (WHERE change = 'exited') "
        "FROM segments.changes WHERE segment = ? AND cadence = ? AND partition_key = ?",
        key,
    ).fetchone()
    status, reason, change_pct = _guard(
        segment, accounts, previous_accounts, segment.name in override or "*" in override
    )
    if segment.purpose == "target":
        status, reason = _test_gate(status, reason, failing_tests, override)
    con.execute(
        "INSERT INTO segments.partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [*key, as_of, accounts, people, holdout, entries, exits, previous_as_of, previous_accounts, change_pct,
         status, reason, computed_at],
    )  # fmt: skip
    return SegmentStats(segment.name, accounts, people, holdout, entries, exits, previous_accounts, change_pct,
                        status, reason)  # fmt: skip
