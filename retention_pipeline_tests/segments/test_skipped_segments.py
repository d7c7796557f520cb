"""A segment reading a partitioned table that has no rows for the partition (the churn scores, while no model is
trained) is skipped: no partition (an empty one would remove everyone from its audiences), a warning saying why,
its siblings computed and synced as usual."""

from datetime import datetime

import dagster as dg
import pytest

from retention_pipeline.destinations.assets import next_units
from retention_pipeline.segments.assets import build_segment_asset
from retention_pipeline.segments.engine import SKIPPED
from retention_pipeline.segments.fixtures import build_features, compute_with_features, prepare
from retention_pipeline.segments.project import load_segments
from retention_pipeline.warehouse import DuckDBWarehouse

DAY1, DAY2 = datetime(2026, 11, 19), datetime(2026, 11, 20)
FEATURES = {"usage_7d": 10, "usage_prior_7d": 100, "wow_usage_change_pct": -90, "days_since_last_usage": 2,
            "is_archived": False, "renewed_14d": False, "do_not_retarget": False, "has_failed_payment": False,
            "annual_value": 5000.0, "value_decile": 5}  # fmt: skip
ACCOUNTS = [{"customer_id": f"acct{i:02d}", **FEATURES} for i in range(12)]
SCORES = {
    "analytics.churn_scores": {
        "defaults": {"risk_tier": "high", "model_version": "m1", "revenue_at_risk_decile": 5},
        "rows": [{"customer_id": a["customer_id"], "p_churn_30d": 0.6} for a in ACCOUNTS],
    }
}


@pytest.fixture
def warehouse(tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.connect() as con:
        prepare(con, [{"customer_id": a["customer_id"], "person_id": f"p{i}", "marketing_consent": True}
                      for i, a in enumerate(ACCOUNTS)])  # fmt: skip
    return warehouse


def daily_segments():
    return [s for s in load_segments() if s.cadence == "daily" or s.purpose == "suppress"]


def test_without_scores_the_score_segment_is_skipped_and_keeps_its_previous_partition(warehouse):
    with warehouse.connect() as con:
        first = {s.segment: s for s in compute_with_features(con, daily_segments(), "daily", DAY1, ACCOUNTS,
                                                             tables=SCORES)}  # fmt: skip
        assert first["churn_risk_high"].guard_status == "ok" and first["churn_risk_high"].accounts == 12
        stats = {s.segment: s for s in compute_with_features(con, daily_segments(), "daily", DAY2, ACCOUNTS)}
        skipped = stats["churn_risk_high"]
        assert skipped.guard_status == SKIPPED and skipped.blocked and not skipped.computed
        assert skipped.guard_reason.startswith("segments/churn_risk_high.sql:")
        assert "analytics.churn_scores" in skipped.guard_reason and "2026-11-20 00:00" in skipped.guard_reason
        # Only it: every other segment computed for DAY2.
        assert {n for n, s in stats.items() if s.guard_status != "ok"} == {"churn_risk_high"}
        newest = con.execute(
            "SELECT max(as_of) FROM segments.partitions WHERE segment = 'churn_risk_high'"
        ).fetchone()
        assert newest == (DAY1,)  # no empty DAY2 partition that would remove all 12 people
        assert con.execute("SELECT segment, error FROM segments.errors").fetchall() == [
            ("churn_risk_high", skipped.guard_reason)
        ]
        # Scores arrive (the model trains) and a re-run computes it.
        again = {s.segment: s for s in compute_with_features(con, daily_segments(), "daily", DAY2, ACCOUNTS,
                                                             tables=SCORES)}  # fmt: skip
        assert again["churn_risk_high"].guard_status == "ok"
        assert con.execute("SELECT count(*) FROM segments.errors").fetchone() == (0,)


def test_through_the_asset_a_skip_is_a_warning_and_the_sync_holds_only_that_segment(warehouse):
    with warehouse.connect() as con:
        compute_with_features(con, daily_segments(), "daily", DAY1, ACCOUNTS, tables=SCORES)
        build_features(con, "daily", DAY2, ACCOUNTS)
    segments = daily_segments()
    asset = build_segment_asset("daily", segments, deps=[], gated_models=[])
    result = dg.materialize([asset], partition_key="2026-11-19", resources={"duckdb": warehouse})
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["size_guard_churn_risk_high"].passed
    assert "skipped" in checks["size_guard_churn_risk_high"].description
    assert all(c.passed for name, c in checks.items() if name != "size_guard_churn_risk_high")
    materialization = result.asset_materializations_for_node(asset.op.name)[0]
    assert "churn_risk_high/accounts" not in materialization.metadata  # no false 0 in the plot
    with warehouse.connect() as con:
        units = {(u.segment.name, u.destination): u for u in next_units(con, segments, "daily")}
    assert units["usage_drop_wow", "customerio"].mode == "full"
    assert units["churn_risk_high", "customerio"].mode is None  # held: its DAY2 partition is missing
