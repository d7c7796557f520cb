"""The pipeline steps the stages run, as thin sequences of the project's own functions (nothing re-implemented):
models, segments, sync; plus the untimed churn set-up between two segment partitions."""

from __future__ import annotations

import functools
import shutil
import time
from datetime import datetime
from pathlib import Path

from bench import cache
from retention_pipeline.cadences import BY_NAME

CADENCES = ("hourly", "daily")  # hourly first: daily segments may exclude hourly ones


@functools.cache
def models():
    from retention_pipeline.models.project import SQL_ROOT, load_project
    from retention_pipeline.segments.fixtures import RAW_TABLES

    return load_project(SQL_ROOT, RAW_TABLES)


def model(table: str):
    return next(m for m in models() if m.table == table)


def upstream(table: str) -> list:
    """The models `table` reads, transitively, that a run rebuilds (tables; views cost nothing to rebuild), in
    build order."""
    by_table = {m.table: m for m in models()}
    needed: set[str] = set()
    pending = [table]
    while pending:
        for ref in by_table[pending.pop()].refs:
            if ref in by_table and ref not in needed:
                needed.add(ref)
                pending.append(ref)
    return [m for m in models() if m.table in needed and m.materialized == "table"]


@functools.cache
def segments():
    from retention_pipeline.segments.project import load_segments

    return load_segments()


def target_segments(cadence: str | None = None) -> list:
    return [s for s in segments() if s.purpose == "target" and cadence in (None, s.cadence)]


def partition_key(cadence: str, as_of: datetime) -> str:
    return BY_NAME[cadence].as_of_to_key(as_of)


def copy_db(source: Path, target: Path) -> Path:
    for path in (target, target.with_name(target.name + ".wal")):
        path.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def build_models(con, cadence: str, as_of: datetime) -> dict[str, float]:
    """Every model of the project for one cadence partition (what the models step of a run does); seconds per
    model."""
    from retention_pipeline.models.assets import build_model, set_run_variables

    set_run_variables(con, cadence, as_of)
    seconds = {}
    for m in models():
        started = time.perf_counter()
        build_model(con, m)
        seconds[m.table] = time.perf_counter() - started
    return seconds


def compute_segments(con, as_of: datetime, cadences=CADENCES) -> list:
    from retention_pipeline.models.assets import set_run_variables
    from retention_pipeline.segments.engine import compute_partition

    stats = []
    for cadence in cadences:
        set_run_variables(con, cadence, as_of)
        stats += compute_partition(con, segments(), cadence, partition_key(cadence, as_of), as_of)
    return stats


def sync(db: Path, adapters: dict, as_of: datetime, cadences=CADENCES, sync_id: str = "bench") -> list:
    """run_sync per cadence, as each cadence's activation asset calls it."""
    from retention_pipeline.destinations.assets import next_units
    from retention_pipeline.destinations.sync import SyncContext, run_sync

    reports = []
    for cadence in cadences:
        context = SyncContext(
            f"{sync_id}:{cadence}:{as_of:%Y%m%d%H}", cadence, partition_key(cadence, as_of), as_of
        )
        with cache.connect(db) as con:
            units = next_units(con, segments(), cadence)
        reports += run_sync(
            lambda: cache.connect(db), units, adapters, context, dry_run=False, log=cache._noop
        )
    return reports


def own_units(con) -> list:
    """Every target segment × destination, each from its own cadence's latest partition (what a full sync plans)."""
    from retention_pipeline.destinations.assets import next_units

    return [u for c in CADENCES for u in next_units(con, segments(), c) if u.segment.cadence == c]


def segments_at(db: Path, as_of: datetime) -> list:
    """Features (both cadences) and every segment partition at `as_of` on a copy of the base file."""
    with cache.connect(db) as con:
        for cadence in CADENCES:
            build_models(con, cadence, as_of)
        return compute_segments(con, as_of)


# Feature values that put an account in no segment at all (active, steady, no renewal, no credits, paid).
_NEUTRAL = """usage_7d = 100, usage_prior_7d = 100, wow_usage_change_pct = 0, last_usage_at = as_of,
    days_since_last_usage = 0, contract_end = NULL, days_to_renewal = NULL, credit_balance = 0,
    credit_burn_daily = 0, days_until_credits_depleted = NULL, credit_used_pct = NULL, has_failed_payment = false,
    plan_changed_30d = false, is_archived = false, renewed_14d = false, do_not_retarget = false"""
# Feature values that put an account in usage_drop_wow (a 90% week-over-week drop) and nothing else.
_DROPPING = """usage_7d = 10, usage_prior_7d = 100, wow_usage_change_pct = -90, last_usage_at = as_of,
    days_since_last_usage = 0"""


def churn_features(con, previous: datetime, as_of: datetime, churn_pct: float) -> dict:
    """The next partition's features: the previous ones again, except that `churn_pct`% of the accounts in any
    target segment stop qualifying for every segment and as many accounts that were in none start dropping.

    Untimed set-up for the segments and sync stages; the accounts are picked by md5, so runs are repeatable."""
    params = {"previous": previous.replace(tzinfo=None), "as_of": as_of.replace(tzinfo=None)}
    con.execute("DELETE FROM analytics.customer_features WHERE as_of = $as_of", {"as_of": params["as_of"]})
    con.execute(
        "INSERT INTO analytics.customer_features SELECT * REPLACE ($as_of AS as_of) "
        "FROM analytics.customer_features WHERE as_of = $previous",
        params,
    )
    members = con.execute(
        """SELECT DISTINCT m.customer_id FROM segments.members AS m
        JOIN segments.definitions AS d USING (segment)
        WHERE d.purpose = 'target' AND m.as_of = $previous ORDER BY md5(m.customer_id)""",
        {"previous": params["previous"]},
    ).fetchall()
    leaving = [r[0] for r in members[: round(len(members) * churn_pct / 100)]]
    outsiders = con.execute(
        """SELECT customer_id FROM analytics.customer_features
        WHERE cadence = 'daily' AND as_of = $previous
          AND customer_id NOT IN (SELECT customer_id FROM segments.members WHERE as_of = $previous)
        ORDER BY md5(customer_id) LIMIT $n""",
        {"previous": params["previous"], "n": len(leaving)},
    ).fetchall()
    joining = [r[0] for r in outsiders]
    for assignments, accounts in ((_NEUTRAL, leaving), (_DROPPING, joining)):
        con.execute(
            f"UPDATE analytics.customer_features SET {assignments} "
            "WHERE as_of = $as_of AND customer_id IN (SELECT unnest($accounts::VARCHAR[]))",
            {"as_of": params["as_of"], "accounts": accounts},
        )
    return {
        "member_accounts": len(members),
        "leaving_accounts": len(leaving),
        "joining_accounts": len(joining),
    }


def plan_counts(con) -> dict[str, dict[str, int]]:
    rows = con.execute(
        "SELECT destination, operation, count(*) FROM sync_plan GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for destination, operation, n in rows:
        counts.setdefault(destination, {})[operation] = n
    return counts


def segment_summary(stats: list) -> dict:
    return {
        s.segment: {
            "accounts": s.accounts,
            "people": s.people,
            "entries": s.entries,
            "exits": s.exits,
            "previous_accounts": s.previous_accounts,
            "guard": s.guard_status,
        }
        for s in stats
    }
