"""The churn-risk model: a point-in-time training set (SQL), a calibrated gradient-boosted classifier trained weekly,
daily scores (docs/churn-model.md).

`dataset` builds labelled rows in DuckDB, `training` fits, backtests and stores a model, `scoring` writes one daily
partition of analytics.churn_scores; `assets` wraps them as Dagster assets. This module and `tables` import neither
scikit-learn nor Dagster nor the model loader (which imports `tables`): the catalog reads what the assets write
here without building them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retention_pipeline.catalog import Declaration

STAGE = "models"
TRAINING_KEY = ("analytics", "churn_model_weekly")
SCORING_KEY = ("analytics", "churn_scores_daily")
MODELS_TABLE = "analytics.churn_models"
CALIBRATION_TABLE = "analytics.churn_calibration"
TRAINING_SET_TABLE = "analytics.churn_training_set"
SCORES_TABLE = "analytics.churn_scores"
FEATURES_TABLE = "analytics.customer_features"
SQL_DIR = Path(__file__).resolve().parents[3] / "dbt_like_sql" / "ml"
LABEL_SQL = SQL_DIR / "churn_label.sql"
TRAINING_SET_SQL = SQL_DIR / "churn_training_set.sql"
SCORES_SQL = SQL_DIR / "churn_scores.sql"
HORIZON_DAYS = 30  # the label looks 30 days past t


def declarations() -> list[Declaration]:
    """What the churn assets write, for the catalog (the training asset writes three tables, scoring one)."""
    import dagster as dg

    from retention_pipeline.catalog import Declaration

    return [
        Declaration(
            dg.AssetKey(list(TRAINING_KEY)),
            (MODELS_TABLE, CALIBRATION_TABLE, TRAINING_SET_TABLE),
            STAGE,
            "weekly",
        ),
        Declaration(dg.AssetKey(list(SCORING_KEY)), (SCORES_TABLE,), STAGE, "daily"),
    ]
