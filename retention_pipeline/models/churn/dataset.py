"""The churn training set, built in DuckDB, point in time.

For each daily t of the window the analytics.customer_features SQL itself is evaluated with as_of = t (one columnar
evaluation per t, no copy of the feature logic), then dbt_like_sql/ml/churn_label.sql labels every (customer, t)
and dbt_like_sql/ml/churn_training_set.sql keeps the customers active at t whose label is known. The stored daily
partitions of customer_features are not reused: they may have been computed by an older version of the SQL, and a
backfill must not depend on which of them happen to exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from retention_pipeline.models.assets import set_run_variables
from retention_pipeline.models.churn import FEATURES_TABLE, HORIZON_DAYS, LABEL_SQL, TRAINING_SET_SQL
from retention_pipeline.models.project import Model

# Columns of customer_features that are not features: keys, identifiers and absolute instants (a date says when,
# not how the customer behaves, and would tie the model to the calendar of its training window) are dropped by type;
# these two by name.
NOT_FEATURES = {
    "is_archived": "constant in the population: only customers active (so not archived) at t are labelled",
    "do_not_retarget": "a marketing preference, not behaviour",
}
NUMERIC_TYPES = {"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL"}  # fmt: skip
KEYS = ("customer_id", "cadence", "as_of")
LABEL_COLUMNS = ("churned_30d", "lapsed_30d", "archived_30d", "contract_ended_30d")
# Before the first activity day + 14 days nobody can be seen as active (the label's lookback), so no t is taken there.
ACTIVE_LOOKBACK_DAYS = 14


@dataclass(frozen=True)
class TrainingSet:
    """The labelled rows for one weekly as_of, left in the temp table `churn_training` of the connection (or the
    table build_training_set was given)."""

    as_of: datetime
    days: list[datetime]  # every t evaluated, oldest first
    features: list[str]
    rows: int
    positives: int
    labelled_days: int  # distinct t with at least one labelled row


def label_sql() -> str:
    return LABEL_SQL.read_text()


def training_set_sql() -> str:
    return TRAINING_SET_SQL.read_text()


def feature_model() -> Model:
    """The customer_features model as the project loads it (its SQL is what the training set evaluates)."""
    from retention_pipeline import catalog

    return next(m for m in catalog.models() if m.table == FEATURES_TABLE)


def naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None) if value.tzinfo else value


def feature_columns(described: list[tuple[str, str]]) -> list[str]:
    """The model's numeric and boolean columns minus keys and NOT_FEATURES, in the SQL's order: a column the
    feature SQL gains is a feature at the next training."""
    return [
        name
        for name, dtype in described
        if name not in KEYS and name not in NOT_FEATURES and dtype.upper().split("(")[0] in NUMERIC_TYPES
    ]


def first_activity_day(con: duckdb.DuckDBPyConnection, before: datetime) -> datetime | None:
    """The first UTC day with activity-metric usage > 0 before `before` (data after it is never looked at)."""
    row = con.execute(
        "SELECT min(date_trunc('day', u.window_start)) FROM staging.stg_usage AS u "
        "JOIN staging.stg_activity_metric AS m USING (billable_metric_id) "
        "WHERE u.value > 0 AND u.window_start < ?",
        [naive(before)],
    ).fetchone()
    return row[0] if row and row[0] else None


def training_days(con: duckdb.DuckDBPyConnection, as_of: datetime, days: int) -> list[datetime]:
    """The daily t of the window, oldest first: the newest is the last midnight with t + 30 d <= as_of, `days` of
    them, none earlier than the first activity day + 14 days."""
    as_of = naive(as_of)
    newest = datetime.combine((as_of - timedelta(days=HORIZON_DAYS)).date(), datetime.min.time())
    first = first_activity_day(con, as_of)
    if first is None:
        return []
    earliest = max(newest - timedelta(days=days - 1), first + timedelta(days=ACTIVE_LOOKBACK_DAYS))
    count = (newest - earliest).days + 1
    return [earliest + timedelta(days=i) for i in range(max(count, 0))]


def evaluate_features(
    con: duckdb.DuckDBPyConnection,
    model: Model,
    days: list[datetime],
    log: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Fill the temp table `churn_features` with the feature SQL evaluated at each t (cadence daily, as_of = t);
    returns the feature columns."""
    set_run_variables(con, "daily", days[-1] if days else None)
    con.execute(f"CREATE OR REPLACE TEMP TABLE churn_features AS SELECT * FROM ({model.sql}) LIMIT 0")
    for number, t in enumerate(days, start=1):
        set_run_variables(con, "daily", t)
        con.execute(f"INSERT INTO churn_features BY NAME {model.sql}")
        if number % 10 == 0 or number == len(days):
            log(f"churn training set: features at t = {t:%Y-%m-%d} ({number}/{len(days)})")
    described = con.execute("DESCRIBE churn_features").fetchall()
    return feature_columns([(name, dtype) for name, dtype, *_ in described])


def label_points(con: duckdb.DuckDBPyConnection, points_sql: str, horizon: datetime, params=None) -> None:
    """The temp table `churn_labels`: churn_label.sql for the (customer_id, t) rows `points_sql` selects, with data
    complete up to `horizon`."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE churn_points AS SELECT customer_id, t FROM ({points_sql})", params
    )
    con.execute("SET VARIABLE churn_horizon = ?::TIMESTAMP", [naive(horizon)])
    con.execute(f"CREATE OR REPLACE TEMP TABLE churn_labels AS {label_sql()}")
    con.execute("DROP TABLE churn_points")  # consumed: temp tables hold memory until dropped


def build_training_set(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    days: int,
    log: Callable[[str], None] = lambda _: None,
    model: Model | None = None,
    table: str | None = None,
) -> TrainingSet:
    """The labelled rows for the weekly partition ending at `as_of`, in the temp table `churn_training`, or in
    `table` (a schema-qualified table, replaced) when given.

    Only data before `as_of` is read: features at t read data before t, labels data in (t, t + 30 d] <= as_of.
    The intermediate temp tables are dropped as soon as they are consumed: at 100k customers the features of every
    t and their labels are a few GB, which DuckDB keeps (in memory, or spilled) until they are dropped."""
    model = model or feature_model()
    window = training_days(con, as_of, days)
    features = evaluate_features(con, model, window, log)
    label_points(con, "SELECT customer_id, as_of AS t FROM churn_features", as_of)
    con.execute("SET VARIABLE churn_as_of = ?::TIMESTAMP", [naive(as_of)])
    target = table or "churn_training"
    con.execute(
        f"CREATE OR REPLACE {'' if table else 'TEMP '}TABLE {target} AS {training_set_sql()} "
        "ORDER BY t, customer_id"
    )
    con.execute("DROP TABLE churn_features")
    con.execute("DROP TABLE churn_labels")
    rows, positives, labelled_days = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE churned_30d), count(DISTINCT t) FROM {target}"
    ).fetchone()
    return TrainingSet(naive(as_of), window, features, rows, positives, labelled_days)
