"""Segment fixtures: declare feature rows for made-up accounts and the membership each segment must produce.

A fixture file (YAML, `dbt_like_sql/segments/tests/*.yml`):

    as_of: 2026-11-20 00:00            # the partition end; hourly and daily segments are both computed at it
    defaults: {usage_7d: 100, usage_prior_7d: 100}   # feature values every account starts from
    accounts:
      - {customer_id: drop_exactly_40, usage_7d: 60, wow_usage_change_pct: -40}
    contacts:                          # optional; default: one consenting person <customer_id>-p1 per account
      - {customer_id: drop_exactly_40, person_id: p1, marketing_consent: false}
    expect:                            # per segment: account → out | in | <tier>
      usage_drop_wow: {drop_exactly_40: low}
    expect_audiences:                  # optional: per segment and destination, the exact accounts sent
      usage_drop_wow: {meta: [drop_exactly_40]}

The fixture runs the real models (on empty raw tables, so the schema is the real one), then the real segment
engine, in a throwaway DuckDB file.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from retention_pipeline.models.assets import build_model, set_run_variables
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.segments.engine import compute_partition
from retention_pipeline.segments.project import SEGMENTS_ROOT, Segment, load_segments
from retention_pipeline.source.tables import CONTACTS_TABLE, SNAPSHOT_TABLES, USAGE_TABLE, create_raw_tables
from retention_pipeline.warehouse import DuckDBWarehouse

FIXTURES_ROOT = SEGMENTS_ROOT / "tests"
STEP = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}
RAW_TABLES = {t.name for t in SNAPSHOT_TABLES} | {USAGE_TABLE, CONTACTS_TABLE}


def _partition_key(cadence: str, as_of: datetime) -> str:
    start = as_of - STEP[cadence]
    return start.strftime("%Y-%m-%d-%H:%M" if cadence == "hourly" else "%Y-%m-%d")


def run_fixture(path: Path, segments: list[Segment] | None = None) -> list[str]:
    """Every mismatch between the fixture's expectations and what the segments produce (empty = pass)."""
    spec = yaml.safe_load(path.read_text())
    segments = segments or load_segments()
    as_of = datetime.fromisoformat(str(spec["as_of"]))
    accounts = [{**(spec.get("defaults") or {}), **a} for a in spec["accounts"]]
    contacts = spec.get("contacts") or [
        {"customer_id": a["customer_id"], "person_id": f"{a['customer_id']}-p1", "marketing_consent": True}
        for a in accounts
    ]
    cadences = [c for c in ("hourly", "daily", "weekly") if any(s.cadence == c for s in segments)]
    with tempfile.TemporaryDirectory() as tmp, DuckDBWarehouse(path=f"{tmp}/fixture.duckdb").connect() as con:
        prepare(con, contacts)
        for cadence in cadences:  # hourly first: daily segments may exclude hourly ones
            compute_with_features(con, segments, cadence, as_of, accounts)
        return _compare(con, spec, as_of)


def prepare(con, contacts: list[dict]) -> None:
    """Empty raw tables plus the given people (customer_id, person_id, marketing_consent)."""
    create_raw_tables(con)
    if not contacts:
        return
    con.executemany(
        f"INSERT INTO {CONTACTS_TABLE} (customer_id, person_id, marketing_consent, issues, source_row, loaded_at) "
        "VALUES (?, ?, ?, [], 0, now())",
        [[c["customer_id"], c["person_id"], bool(c.get("marketing_consent", True))] for c in contacts],
    )


def compute_with_features(
    con,
    segments: list[Segment],
    cadence: str,
    as_of: datetime,
    accounts: list[dict],
    override: set[str] | None = None,
):
    """Build the real models (for the schema), insert the given feature rows at (cadence, as_of), compute."""
    set_run_variables(con, cadence, as_of)
    for model in load_project(SQL_ROOT, RAW_TABLES):
        build_model(con, model)
    for account in accounts:
        row = {**account, "cadence": cadence, "as_of": as_of}
        columns = ", ".join(f'"{k}"' for k in row)
        con.execute(
            f"INSERT INTO analytics.customer_features ({columns}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )
    return compute_partition(con, segments, cadence, _partition_key(cadence, as_of), as_of, override)


def _compare(con, spec: dict, as_of: datetime) -> list[str]:
    failures = []
    for segment, expected in (spec.get("expect") or {}).items():
        got = dict(
            con.execute(
                "SELECT DISTINCT customer_id, coalesce(tier, 'in') FROM segments.members WHERE segment = ? AND as_of = ?",
                [segment, as_of],
            ).fetchall()
        )
        for account, want in expected.items():
            have = got.get(account, "out")
            ok = have == want or (want == "in" and have != "out")
            if not ok:
                failures.append(f"{segment}: {account} expected {want}, got {have}")
    for segment, by_destination in (spec.get("expect_audiences") or {}).items():
        for destination, want in by_destination.items():
            have = {
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT customer_id FROM segments.audiences WHERE segment = ? AND destination = ?",
                    [segment, destination],
                ).fetchall()
            }
            if have != set(want):
                failures.append(f"{segment} → {destination}: expected {sorted(want)}, got {sorted(have)}")
    return failures


def fixture_files(root: Path = FIXTURES_ROOT) -> list[Path]:
    return sorted(root.glob("*.yml"))
