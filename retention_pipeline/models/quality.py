"""Data test outcomes kept in DuckDB, so activation can refuse to act on data that failed an ERROR test.

Dagster's asset checks show each outcome in the UI, but a sync in a later run (or the other cadence's run) cannot
see them. `pipeline.data_tests` keeps the newest outcome of every test per model and partition; the segments stage
reads it to block activation while an ERROR test upstream of the features fails (WARN tests never block).
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from retention_pipeline.models.project import Model

DDL = """
CREATE SCHEMA IF NOT EXISTS pipeline;
CREATE TABLE IF NOT EXISTS pipeline.data_tests (
    model VARCHAR NOT NULL, test VARCHAR NOT NULL, severity VARCHAR NOT NULL, cadence VARCHAR, as_of TIMESTAMP,
    passed BOOLEAN NOT NULL, failing_rows BIGINT NOT NULL, evaluated_at TIMESTAMP NOT NULL, run_id VARCHAR
);
"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


def record_outcomes(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    outcomes: dict[str, int],
    cadence: str | None,
    as_of: datetime | None,
    run_id: str | None,
) -> None:
    """Replace the stored outcome of each of the model's tests (for this partition when partitioned)."""
    ensure_tables(con)
    now = datetime.now(UTC).replace(tzinfo=None)
    as_of = as_of.replace(tzinfo=None) if as_of else None
    severity = {t.name: t.severity for t in model.tests}
    con.execute(
        "DELETE FROM pipeline.data_tests WHERE model = ? AND cadence IS NOT DISTINCT FROM ? "
        "AND as_of IS NOT DISTINCT FROM ?",
        [model.table, cadence, as_of],
    )
    if not outcomes:
        return
    con.executemany(
        "INSERT INTO pipeline.data_tests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (model.table, name, severity[name], cadence, as_of, failing == 0, failing, now, run_id)
            for name, failing in outcomes.items()
        ],
    )


def failing_error_tests(
    con: duckdb.DuckDBPyConnection, tables: list[str], cadence: str, as_of: datetime
) -> dict[str, str]:
    """ERROR tests failing on the given models, as "model.test" → "model.test failed (N rows)".

    A partitioned model is judged on this partition (cadence, as_of); an unpartitioned one on its newest outcome."""
    ensure_tables(con)
    rows = con.execute(
        """WITH newest AS (
            SELECT * FROM pipeline.data_tests
            WHERE model IN (SELECT unnest($tables::VARCHAR[]))
              AND ((cadence = $cadence AND as_of = $as_of) OR cadence IS NULL)
            QUALIFY row_number() OVER (PARTITION BY model, test ORDER BY evaluated_at DESC) = 1
        )
        SELECT model, test, failing_rows FROM newest WHERE NOT passed AND severity = 'error' ORDER BY model, test""",
        {"tables": tables, "cadence": cadence, "as_of": as_of.replace(tzinfo=None)},
    ).fetchall()
    return {f"{model}.{test}": f"{model}.{test} failed ({failing:,} rows)" for model, test, failing in rows}


def is_overridden(test: str, override: set[str]) -> bool:
    """override_guard accepts a failing test by "*", its full name (analytics.usage_daily.no_negatives) or its
    bare name."""
    return "*" in override or test in override or test.rsplit(".", 1)[-1] in override
