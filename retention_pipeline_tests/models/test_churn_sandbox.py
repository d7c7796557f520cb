"""The churn model end to end on the embedded sandbox tenant: the daily job extracts the history and builds the
staging views, the weekly job trains, the daily job scores the latest day with that model."""

from __future__ import annotations

import dagster as dg

from retention_pipeline.definitions import defs
from retention_pipeline.models.churn import (
    CALIBRATION_TABLE,
    MODELS_TABLE,
    SCORES_TABLE,
    SCORING_KEY,
    TRAINING_KEY,
)
from retention_pipeline.warehouse import DuckDBWarehouse

NOW = "2026-11-20T10:30:00Z"
DAY = "2026-11-19"  # the latest complete day at NOW (as_of 2026-11-20)
WEEK = "2026-11-08"  # the latest complete week at NOW (as_of 2026-11-15)


def test_the_sandbox_history_trains_a_calibrated_model_that_scores_the_latest_day(monkeypatch, instance):
    monkeypatch.setenv("RETENTION_SANDBOX_NOW", NOW)
    monkeypatch.setenv("RETENTION_SANDBOX_CUSTOMERS", "150")
    monkeypatch.setenv("RETENTION_HISTORY_DAYS", "120")  # the tenant's whole history
    daily = defs.resolve_job_def("daily_retention")
    scoring = dg.AssetKey(list(SCORING_KEY))
    executable = set(daily.asset_layer.executable_asset_keys)
    inputs = dg.AssetSelection.assets(scoring).upstream().resolve(daily.asset_layer.asset_graph) & executable
    extracted = daily.execute_in_process(
        partition_key=DAY, instance=instance, asset_selection=sorted(inputs - {scoring}, key=str)
    )
    assert extracted.success

    trained = defs.resolve_job_def("weekly_churn_model").execute_in_process(
        partition_key=WEEK, instance=instance
    )
    assert trained.success
    (materialization,) = trained.asset_materializations_for_node("__".join(TRAINING_KEY))
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["status"] == "trained", metadata["message"]
    for name in ("roc_auc", "pr_auc", "brier", "baseline_roc_auc", "baseline_pr_auc", "baseline_brier"):
        assert 0 <= metadata[name] <= 1, name
    assert metadata["baseline_rule"] and metadata["rows"] > 0 and metadata["positives"] > 0

    scored = daily.execute_in_process(partition_key=DAY, instance=instance, asset_selection=[scoring])
    assert scored.success
    with DuckDBWarehouse().connect() as con:
        version, rows_test = con.execute(
            f"SELECT model_version, rows_test FROM {MODELS_TABLE} WHERE status = 'trained'"
        ).fetchone()
        assert version == metadata["model_version"]
        calibration = con.execute(
            f"SELECT scorer, sum(n) FROM {CALIBRATION_TABLE} WHERE model_version = ? GROUP BY ALL ORDER BY 1",
            [version],
        ).fetchall()
        assert calibration == [("baseline", rows_test), ("model", rows_test)]
        scores = con.execute(
            f"SELECT count(*), count(DISTINCT model_version), min(p_churn_30d), max(p_churn_30d), "
            f"any_value(model_version) FROM {SCORES_TABLE} WHERE cadence = 'daily' AND as_of = '2026-11-20'"
        ).fetchone()
    count, versions, low, high, used = scores
    assert count > 0 and versions == 1 and used == version
    assert 0 <= low <= high <= 1
