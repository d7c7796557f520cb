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
    tables:                            # optional: rows of other partitioned tables segments read, at (cadence, as_of)
      analytics.churn_scores:
        defaults: {risk_tier: low, model_version: fixture}
        rows: [{customer_id: drop_exactly_40, p_churn_30d: 0.7}]

The fixture runs the real models (on empty raw tables, so the schema is the real one), then the real segment
engine, in a throwaway DuckDB file. Every segment needs a fixture that states its expectations
(`missing_fixture_message` says which file to create and what to put in it; `new-segment` writes one).
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import yaml

from retention_pipeline.cadences import BY_NAME, NAMES
from retention_pipeline.models.assets import build_model, set_run_variables
from retention_pipeline.models.churn.tables import create_typed_tables
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.segments.engine import FAILED, SKIPPED, SegmentRunError, compute_partition
from retention_pipeline.segments.project import SEGMENTS_ROOT, Segment, load_segments
from retention_pipeline.source.tables import CONTACTS_TABLE, SNAPSHOT_TABLES, USAGE_TABLE, create_raw_tables
from retention_pipeline.warehouse import DuckDBWarehouse

FIXTURES_ROOT = SEGMENTS_ROOT / "tests"
RAW_TABLES = {t.name for t in SNAPSHOT_TABLES} | {USAGE_TABLE, CONTACTS_TABLE}


def _partition_key(cadence: str, as_of: datetime) -> str:
    return BY_NAME[cadence].as_of_to_key(as_of)


def run_fixture(path: Path, segments: list[Segment] | None = None) -> list[str]:
    """Every mismatch between the fixture's expectations and what the segments produce (empty = pass). Default
    segments: the folder above the fixture's `tests/`. A segment that fails to compute raises SegmentRunError."""
    spec = yaml.safe_load(path.read_text())
    segments = segments or load_segments(path.resolve().parent.parent)
    as_of = datetime.fromisoformat(str(spec["as_of"]))
    accounts = [{**(spec.get("defaults") or {}), **a} for a in spec["accounts"]]
    contacts = spec.get("contacts") or [
        {"customer_id": a["customer_id"], "person_id": f"{a['customer_id']}-p1", "marketing_consent": True}
        for a in accounts
    ]
    cadences = [c for c in NAMES if any(s.cadence == c for s in segments)]
    with tempfile.TemporaryDirectory() as tmp, DuckDBWarehouse(path=f"{tmp}/fixture.duckdb").connect() as con:
        prepare(con, contacts)
        for cadence in cadences:  # hourly first: daily segments may exclude hourly ones
            stats = compute_with_features(con, segments, cadence, as_of, accounts, tables=spec.get("tables"))
            # A segment skipped for a missing input (no `tables:` rows for the scores it reads) matters only to a
            # fixture that states what it must produce.
            expected = set(spec.get("expect") or {}) | set(spec.get("expect_audiences") or {})
            failed = [
                s.guard_reason
                for s in stats
                if s.guard_status == FAILED or (s.guard_status == SKIPPED and s.segment in expected)
            ]
            if failed:
                raise SegmentRunError(f"{path.name}: " + "; ".join(failed))
        return _compare(con, spec, as_of)


def prepare(con, contacts: list[dict]) -> None:
    """Empty raw tables plus the given people (customer_id, person_id, marketing_consent)."""
    create_raw_tables(con)
    if not contacts:
        return
    # One columnar insert (a DuckDB replacement scan of the Arrow table): thousands of people must not cost a
    # statement each.
    fixture_people = pa.Table.from_pylist(  # noqa: F841
        [
            {"customer_id": c["customer_id"], "person_id": c["person_id"],
             "marketing_consent": bool(c.get("marketing_consent", True))}
            for c in contacts
        ]
    )  # fmt: skip
    con.execute(
        f"INSERT INTO {CONTACTS_TABLE} (customer_id, person_id, marketing_consent, issues, source_row, loaded_at) "
        "SELECT customer_id, person_id, marketing_consent, [], 0, now() FROM fixture_people"
    ).fetchall()


def compute_with_features(
    con,
    segments: list[Segment],
    cadence: str,
    as_of: datetime,
    accounts: list[dict],
    override: set[str] | None = None,
    tables: dict | None = None,
):
    """Build the real models (for the schema), insert the given feature rows (and rows of other partitioned tables,
    `tables`: name → {defaults, rows}) at (cadence, as_of), compute."""
    build_features(con, cadence, as_of, accounts)
    insert_table_rows(con, cadence, as_of, tables or {})
    return compute_partition(con, segments, cadence, _partition_key(cadence, as_of), as_of, override)


def insert_table_rows(con, cadence: str, as_of: datetime, tables: dict) -> None:
    """A fixture's `tables:` as the (cadence, as_of) rows of each table (typed by its DDL; replaced, not added)."""
    create_typed_tables(con)
    for table, spec in tables.items():
        rows = [
            {**(spec.get("defaults") or {}), **row, "cadence": cadence, "as_of": as_of}
            for row in spec["rows"]
        ]
        con.execute(f"DELETE FROM {table} WHERE cadence = ? AND as_of = ?", [cadence, as_of])
        _insert_rows(con, table, rows)


def build_features(con, cadence: str, as_of: datetime, accounts: list[dict]) -> None:
    """The real models built (for the schema), then exactly the given rows as the (cadence, as_of) features."""
    set_run_variables(con, cadence, as_of)
    for model in load_project(SQL_ROOT, RAW_TABLES):
        build_model(con, model)
    _insert_rows(
        con, "analytics.customer_features", [{**a, "cadence": cadence, "as_of": as_of} for a in accounts]
    )


def _insert_rows(con, table: str, rows: list[dict]) -> None:
    """Columnar, by name (a DuckDB replacement scan of an Arrow table): a column a row leaves out is NULL."""
    if not rows:
        return
    keys = list(
        dict.fromkeys(k for row in rows for k in row)
    )  # every row's keys (from_pylist reads the first's)
    fixture_rows = pa.table({k: [row.get(k) for row in rows] for k in keys})  # noqa: F841
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM fixture_rows").fetchall()


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


def covered_segments(root: Path = FIXTURES_ROOT) -> set[str]:
    """The segments some fixture file states expectations for (`expect` or `expect_audiences`)."""
    covered = set()
    for path in fixture_files(root):
        spec = yaml.safe_load(path.read_text()) or {}
        covered |= set(spec.get("expect") or {}) | set(spec.get("expect_audiences") or {})
    return covered


def fixture_path(segment: Segment) -> Path:
    """Where a segment's own fixture goes: `tests/<name>.yml` beside the segment files."""
    return segment.path.parent / "tests" / f"{segment.name}.yml"


def fixture_skeleton(segment: str, as_of: str = "2026-11-20 00:00") -> str:
    """A fixture file for one segment, ready to run: accounts in and out of the scaffolded rule (`new-segment`
    writes both), with a comment saying what to change."""
    return f"""# Fixture for segment {segment}: made-up feature rows and the membership the rule must produce.
# Each account starts from `defaults`; list only the features that matter. Put one account on each side of every
# threshold (exactly at it, and just past it). Columns: analytics.customer_features (docs/reference.md, "analytics.customer_features").
as_of: {as_of}  # the partition end: the segment is computed as of this instant
defaults: {{usage_7d: 100, usage_prior_7d: 100, wow_usage_change_pct: 0, days_since_last_usage: 0,
           has_failed_payment: false, is_archived: false, renewed_14d: false, do_not_retarget: false}}
accounts:
  - {{customer_id: went_idle, usage_7d: 0, wow_usage_change_pct: -100}}
  - {{customer_id: barely_used, usage_7d: 5, wow_usage_change_pct: -95}}
  - {{customer_id: steady}}
# contacts: default one consenting person <customer_id>-p1 per account; list them to test consent or shared people:
#   - {{customer_id: went_idle, person_id: p1, marketing_consent: false}}
expect:                        # account → out | in | <tier>
  {segment}: {{went_idle: high, barely_used: low, steady: out}}
# expect_audiences:            # optional: the exact accounts each destination receives (after consent, suppression)
#   {segment}: {{customerio: [went_idle, barely_used]}}
"""


def missing_fixture_message(segment: Segment, covered: set[str]) -> str | None:
    """None when some fixture states expectations for the segment; else which file to create, and its shape."""
    if segment.name in covered:
        return None
    path = fixture_path(segment)
    shown = path.relative_to(SQL_ROOT.parent) if path.is_relative_to(SQL_ROOT.parent) else path
    return (
        f"segment {segment.name} ({segment.at()}) has no fixture: no file in {path.parent} states what it must "
        f"produce. Create {shown} (or add `{segment.name}:` under `expect` in an existing fixture), shaped like "
        f"this (then edit the accounts to straddle your rule's thresholds):\n\n{fixture_skeleton(segment.name)}"
    )
