"""A segment whose rule fails on the data does not hold back its siblings: they compute (and sync); the failure is
reported on its own check and kept in segments.errors, with no partition that would empty its audiences."""

import dataclasses
from datetime import datetime, timedelta

import dagster as dg
import pytest

from retention_pipeline.destinations.assets import next_units
from retention_pipeline.segments.assets import build_segment_asset
from retention_pipeline.segments.engine import FAILED, suppression_status
from retention_pipeline.segments.fixtures import build_features, compute_with_features, prepare
from retention_pipeline.segments.project import load_segment, load_segments
from retention_pipeline.warehouse import DuckDBWarehouse

DAY1, DAY2 = datetime(2026, 11, 19), datetime(2026, 11, 20)
KEY2 = "2026-11-19"  # the daily partition ending at DAY2
FEATURES = {"usage_7d": 10, "usage_prior_7d": 100, "wow_usage_change_pct": -90, "days_since_last_usage": 50,
            "is_archived": False, "renewed_14d": False, "do_not_retarget": False}  # fmt: skip
ACCOUNTS = [{"customer_id": f"acct{i:02d}", **FEATURES} for i in range(20)]
# Binds (so definitions load accepts it) but fails on the data: customer ids are not numbers.
FAILS_AT_RUN_TIME = "SELECT customer_id FROM features WHERE CAST(customer_id AS INTEGER) > 0"


def broken(segment, sql: str = FAILS_AT_RUN_TIME):
    return dataclasses.replace(segment, sql_template=sql)


@pytest.fixture
def warehouse(tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as con:
        prepare(con, [{"customer_id": a["customer_id"], "person_id": f"p{i}", "marketing_consent": True}
                      for i, a in enumerate(ACCOUNTS)])  # fmt: skip
    return warehouse


def daily_segments(replace: dict | None = None):
    # Segments reading another partitioned table (the churn scores) are skipped without it: test_skipped_segments.py.
    segments = [
        s for s in load_segments() if (s.cadence == "daily" or s.purpose == "suppress") and not s.refs
    ]
    return [(replace or {}).get(s.name, lambda s: s)(s) for s in segments]


def partitions(con, as_of):
    return dict(
        con.execute(
            "SELECT segment, accounts FROM segments.partitions WHERE cadence = 'daily' AND as_of = ?", [as_of]
        ).fetchall()
    )


def test_a_failing_segment_does_not_block_its_siblings(warehouse):
    with warehouse.connect() as con:
        compute_with_features(con, daily_segments(), "daily", DAY1, ACCOUNTS)
        stats = compute_with_features(
            con, daily_segments({"usage_drop_wow": broken}), "daily", DAY2, ACCOUNTS
        )
        by_name = {s.segment: s for s in stats}
        failed = by_name["usage_drop_wow"]
        assert failed.guard_status == FAILED and failed.blocked
        assert failed.guard_reason.startswith("segments/usage_drop_wow.sql:")
        assert "Conversion Error" in failed.guard_reason
        assert {n: s.guard_status for n, s in by_name.items() if n != "usage_drop_wow"} == {
            "renewal_7d_low_activity": "ok", "winback_lapsed_45_120": "ok", "do_not_retarget": "ok",
            "overdue_vs_rhythm": "ok",
        }  # fmt: skip
        # Siblings computed; the failed segment has no partition for the key (its newest stays DAY1), only an error.
        assert partitions(con, DAY2) == {"renewal_7d_low_activity": 0, "winback_lapsed_45_120": 20,
                                         "do_not_retarget": 0, "overdue_vs_rhythm": 0}  # fmt: skip
        assert con.execute(
            "SELECT max(as_of) FROM segments.partitions WHERE segment = 'usage_drop_wow'"
        ).fetchone() == (DAY1,)
        assert con.execute("SELECT segment, cadence, as_of, error FROM segments.errors").fetchall() == [
            ("usage_drop_wow", "daily", DAY2, failed.guard_reason)
        ]
        # Fixed and re-run: the partition appears and the error row goes.
        compute_with_features(con, daily_segments(), "daily", DAY2, ACCOUNTS)
        assert partitions(con, DAY2)["usage_drop_wow"] == 20
        assert con.execute("SELECT count(*) FROM segments.errors").fetchone() == (0,)


def test_a_segment_excluding_a_failed_one_fails_too(warehouse, tmp_path):
    def segment(name, body, header=""):
        path = tmp_path / f"{name}.sql"
        path.write_text(f"/*\ndescription: x\ncadence: daily\n{header}*/\n{body}")
        return load_segment(path)

    suppress = next(s for s in load_segments() if s.name == "do_not_retarget")
    failing = segment("failing", FAILS_AT_RUN_TIME)
    excluding = segment("excluding", "SELECT customer_id FROM features", header="exclude: [failing]\n")
    independent = segment("independent", "SELECT customer_id FROM features")
    with warehouse.connect() as con:
        stats = compute_with_features(
            con, [suppress, failing, excluding, independent], "daily", DAY2, ACCOUNTS
        )
    by_name = {s.segment: s for s in stats}
    assert by_name["independent"].guard_status == "ok" and by_name["independent"].accounts == 20
    assert by_name["excluding"].guard_status == FAILED
    assert by_name["excluding"].guard_reason.startswith(
        "segments/excluding.sql:4: not computed: it excludes failing, which failed (segments/failing.sql:5: "
    )


def test_a_failed_suppression_leaves_the_previous_one_in_force_and_ad_syncs_stale(warehouse):
    flagged = [{**a, "is_archived": a["customer_id"] == "acct00"} for a in ACCOUNTS]
    with warehouse.connect() as con:
        compute_with_features(con, daily_segments(), "daily", DAY1, flagged)
        stats = compute_with_features(
            con, daily_segments({"do_not_retarget": broken}), "daily", DAY2, ACCOUNTS
        )
        assert {s.segment: s.guard_status for s in stats}["do_not_retarget"] == FAILED
        # Still suppressed as of DAY1 (an empty DAY2 partition would have released acct00)…
        assert con.execute("SELECT customer_id, as_of FROM segments.suppressed").fetchall() == [
            ("acct00", DAY1)
        ]
        # …which is older than the targets' data, so no ad destination is synced.
        assert "older than the segment's data" in suppression_status(con).covers(DAY2)
        units = {(u.segment.name, u.destination): u for u in next_units(con, daily_segments(), "daily")}
    assert units["usage_drop_wow", "meta"].mode is None
    assert "cannot establish current suppression" in units["usage_drop_wow", "meta"].skipped
    assert units["usage_drop_wow", "customerio"].mode == "full"


def test_through_the_asset_the_failure_is_its_own_check_and_the_sync_holds_only_it(warehouse):
    with warehouse.connect() as con:
        compute_with_features(con, daily_segments(), "daily", DAY1, ACCOUNTS)
        build_features(con, "daily", DAY2, ACCOUNTS)
    segments = daily_segments({"usage_drop_wow": broken})
    asset = build_segment_asset("daily", segments, deps=[], gated_models=[])
    result = dg.materialize([asset], partition_key=KEY2, resources={"duckdb": warehouse})
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["size_guard_usage_drop_wow"].passed
    assert checks["size_guard_usage_drop_wow"].description.startswith("segments/usage_drop_wow.sql:")
    assert all(c.passed for name, c in checks.items() if name != "size_guard_usage_drop_wow")
    with warehouse.connect() as con:
        assert set(partitions(con, DAY2)) == {
            "renewal_7d_low_activity",
            "winback_lapsed_45_120",
            "do_not_retarget",
            "overdue_vs_rhythm",
        }
        units = {(u.segment.name, u.destination): u for u in next_units(con, segments, "daily")}
    # The sync plans DAY2 for the siblings; the failed segment's own partition is missing, so it is held from every
    # destination except the removal of suppressed people from its ad audiences.
    assert units["winback_lapsed_45_120", "customerio"].mode == "full"
    assert units["winback_lapsed_45_120", "meta"].mode == "full"
    assert units["usage_drop_wow", "customerio"].mode is None
    assert units["usage_drop_wow", "meta"].mode == "suppress_only"


def test_a_later_partition_of_a_failed_segment_compares_with_its_last_good_one(warehouse):
    with warehouse.connect() as con:
        compute_with_features(con, daily_segments(), "daily", DAY1, ACCOUNTS[:10])
        compute_with_features(con, daily_segments({"usage_drop_wow": broken}), "daily", DAY2, ACCOUNTS)
        day3 = DAY2 + timedelta(days=1)
        stats = compute_with_features(con, daily_segments(), "daily", day3, ACCOUNTS, override={"*"})
    drop = next(s for s in stats if s.segment == "usage_drop_wow")
    assert (drop.previous_accounts, drop.entries, drop.exits) == (10, 10, 0)
