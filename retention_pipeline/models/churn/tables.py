"""DDL of the tables the churn assets write: created before the first write, and by `create_typed_tables` wherever
SQL that reads them must bind before any model was trained (the segment loader, segment fixtures)."""

from __future__ import annotations

import duckdb

DDL = """
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE TABLE IF NOT EXISTS analytics.churn_models (
    model_version VARCHAR NOT NULL,      -- churn-<trained_as_of date>-<digest of as_of, settings, features, rows>
    trained_as_of TIMESTAMP NOT NULL,    -- the weekly partition's end (W): only data before it was used
    trained_at TIMESTAMP NOT NULL,       -- wall clock of the attempt (UTC)
    status VARCHAR NOT NULL,             -- trained | insufficient_data
    message VARCHAR,
    features VARCHAR[],
    window_start TIMESTAMP,              -- oldest t of the training window
    window_end TIMESTAMP,                -- newest t (t + 30 d <= trained_as_of)
    labelled_days INTEGER,
    rows_labelled BIGINT,
    positives_labelled BIGINT,
    rows_train BIGINT,                   -- backtest train split (after the row cap)
    positives_train BIGINT,
    rows_test BIGINT,                    -- backtest test split (newest labelled days)
    positives_test BIGINT,
    rows_final BIGINT,                   -- rows the stored model was fit on (after the row cap)
    metrics JSON,                        -- the model's test metrics and the backtest split
    baseline JSON,                       -- the best single-threshold rule and its test metrics
    calibration_method VARCHAR,          -- isotonic | sigmoid
    fit_seconds DOUBLE,
    sklearn_version VARCHAR,
    model BLOB                           -- pickle: {estimator, features, medians, ...}; NULL unless trained
);
CREATE TABLE IF NOT EXISTS analytics.churn_calibration (
    model_version VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,             -- model | baseline
    decile INTEGER NOT NULL,             -- 1 = lowest predicted p of the test rows, 10 = highest
    n BIGINT NOT NULL,
    mean_predicted DOUBLE,
    observed_rate DOUBLE
);
CREATE TABLE IF NOT EXISTS analytics.churn_scores (
    customer_id VARCHAR NOT NULL,
    cadence VARCHAR NOT NULL,            -- daily
    as_of TIMESTAMP NOT NULL,
    p_churn_30d DOUBLE NOT NULL,
    risk_tier VARCHAR NOT NULL,          -- high | medium | low, by RETENTION_CHURN_HIGH_RISK / _MEDIUM_RISK
    annual_value DOUBLE,
    expected_revenue_at_risk DOUBLE,     -- p_churn_30d * annual_value
    revenue_at_risk_decile INTEGER,      -- ceil(10 * cume_dist()) of expected_revenue_at_risk within the partition
    model_version VARCHAR NOT NULL,
    top_features VARCHAR                 -- "name +0.21; ...": features whose training median lowers p the most
);
"""


def create_typed_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Idempotent: the churn tables exist (empty when nothing was written yet), so SQL reading them binds."""
    con.execute(DDL)
