"""Daily churn scores: the newest model trained at or before a partition's as_of scores the customers active at
as_of, from that partition of analytics.customer_features (dbt_like_sql/ml/churn_scores.sql shapes the rows).

Point in time: a model trained later never scores an earlier day, so re-scoring a past partition gives what that day
could have known. Top features are found by occlusion: each feature in turn is set to its training median for every
customer (one vectorised predict per feature) and the drop in p is that feature's contribution.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from retention_pipeline.config import ConfigError, env_parsed
from retention_pipeline.models.churn import FEATURES_TABLE, MODELS_TABLE, SCORES_SQL, SCORES_TABLE
from retention_pipeline.models.churn.dataset import label_points, naive
from retention_pipeline.models.churn.tables import create_typed_tables
from retention_pipeline.models.churn.training import one_thread
from retention_pipeline.warehouse import transaction

CADENCE = "daily"
TIERS = ("high", "medium", "low")


@dataclass(frozen=True)
class Tiers:
    """risk_tier thresholds on the calibrated p: high >= high, medium >= medium, else low."""

    high: float
    medium: float

    @classmethod
    def from_env(cls) -> Tiers:
        high = env_parsed("RETENTION_CHURN_HIGH_RISK", _probability, what="expected a probability in (0, 1)")
        medium = env_parsed(
            "RETENTION_CHURN_MEDIUM_RISK", _probability, what="expected a probability in (0, 1)"
        )
        if medium >= high:
            raise ConfigError(
                f"RETENTION_CHURN_MEDIUM_RISK={medium:g} must be below RETENTION_CHURN_HIGH_RISK={high:g}."
            )
        return cls(high, medium)

    def tier(self, p: float) -> str:
        """The tier churn_scores.sql assigns (for callers outside SQL, e.g. a report)."""
        return "high" if p >= self.high else "medium" if p >= self.medium else "low"


def _probability(raw: str) -> float:
    value = float(raw)
    if not 0 < value < 1:
        raise ValueError(f"{value:g} is not in (0, 1)")
    return value


@dataclass(frozen=True)
class StoredModel:
    version: str
    trained_as_of: datetime
    estimator: object
    features: list[str]
    medians: dict[str, float | None]

    def predict(self, x: np.ndarray) -> np.ndarray:
        with one_thread():
            return self.estimator.predict_proba(x)[:, 1]

    def contributions(self, x: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
        """(rows × features) p minus p with that feature replaced by its training median; positive = the customer's
        value of the feature raises the risk. `p` is predict(x) when the caller has it already.

        Only the rows whose value differs from the median are predicted again: for the others the occluded row is
        the row itself, so its delta is exactly 0 (a tree ensemble predicts each row on its own, whatever else is
        in the batch). Flags and counts sit at their median for many customers, so this skips a good share of the
        predicts without changing any delta."""
        p = self.predict(x) if p is None else p
        deltas = np.zeros_like(x)
        for j, name in enumerate(self.features):
            median = self.medians.get(name)
            value = np.nan if median is None else median
            column = x[:, j]
            differs = ~np.isnan(column) if np.isnan(value) else ~(column == value)
            if not differs.any():
                continue
            occluded = x[differs]  # a copy (boolean indexing)
            occluded[:, j] = value
            deltas[differs, j] = p[differs] - self.predict(occluded)
        return deltas


@dataclass
class ScoreSummary:
    as_of: datetime
    scored: int
    model_version: str | None = None
    reason: str | None = None  # why nothing was scored
    tiers: dict[str, int] = field(default_factory=dict)
    mean_p: float | None = None


def newest_model_version(con: duckdb.DuckDBPyConnection, as_of: datetime) -> tuple[str, datetime] | None:
    """The newest trained model whose trained_as_of <= as_of (ties: the latest attempt)."""
    return con.execute(
        f"SELECT model_version, trained_as_of FROM {MODELS_TABLE} WHERE status = 'trained' AND trained_as_of <= ? "
        "ORDER BY trained_as_of DESC, trained_at DESC, model_version DESC LIMIT 1",
        [naive(as_of)],
    ).fetchone()


def why_no_model(con: duckdb.DuckDBPyConnection, as_of: datetime) -> str:
    """The reason to give when no trained model covers as_of: the newest attempt's message, or that none ran."""
    row = con.execute(
        f"SELECT model_version, trained_as_of, status, message FROM {MODELS_TABLE} WHERE trained_as_of <= ? "
        "ORDER BY trained_as_of DESC, trained_at DESC LIMIT 1",
        [naive(as_of)],
    ).fetchone()
    if row is None:
        later = con.execute(
            f"SELECT min(trained_as_of) FROM {MODELS_TABLE} WHERE status = 'trained'"
        ).fetchone()[0]
        return (
            f"no churn model was trained as of {naive(as_of):%Y-%m-%d %H:%M} or before"
            + (f" (the first is as of {later:%Y-%m-%d}, too late for this day)" if later else "")
            + "; materialize analytics/churn_model_weekly (job weekly_churn_model) for an earlier week"
        )
    version, trained_as_of, status, message = row
    return f"no trained churn model as of {naive(as_of):%Y-%m-%d}; the newest attempt {version} ({status}): {message}"


def load_model(con: duckdb.DuckDBPyConnection, version: str, trained_as_of: datetime) -> StoredModel:
    """Unpickle a stored model (the warehouse is trusted: only the training asset writes analytics.churn_models)."""
    import sklearn

    blob, trained_with = con.execute(
        f"SELECT model, sklearn_version FROM {MODELS_TABLE} WHERE model_version = ?", [version]
    ).fetchone()
    try:
        bundle = pickle.loads(blob)
    except Exception as exc:  # an unpicklable model names itself and the versions involved
        raise RuntimeError(
            f"churn model {version} (scikit-learn {trained_with}) cannot be loaded with scikit-learn "
            f"{sklearn.__version__}: {exc}; retrain it (materialize analytics/churn_model_weekly)"
        ) from exc
    return StoredModel(version, trained_as_of, bundle["estimator"], bundle["features"], bundle["medians"])


def _feature_select(con: duckdb.DuckDBPyConnection, features: list[str]) -> tuple[str, list[str]]:
    """SELECT list of the model's features (as DOUBLE; a column the table no longer has is NULL) and annual_value."""
    have = {name for name, *_ in con.execute(f"DESCRIBE {FEATURES_TABLE}").fetchall()}
    missing = [name for name in features if name not in have]
    columns = [f'CAST(f."{name}" AS DOUBLE)' if name in have else "NULL::DOUBLE" for name in features]
    value = "CAST(f.annual_value AS DOUBLE)" if "annual_value" in have else "NULL::DOUBLE"
    select = ", ".join(f'{column} AS "{name}"' for column, name in zip(columns, features, strict=True))
    return f"{select}, {value} AS annual_value", missing


def score_partition(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    tiers: Tiers,
    models: dict[str, StoredModel] | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ScoreSummary:
    """Replace the (daily, as_of) rows of analytics.churn_scores; `models` caches loaded models across partitions.
    Without a model trained at or before as_of, the partition is left empty and the summary says why."""
    as_of = naive(as_of)
    models = {} if models is None else models
    create_typed_tables(con)
    found = newest_model_version(con, as_of)
    if found is None:
        with transaction(con):
            con.execute(f"DELETE FROM {SCORES_TABLE} WHERE cadence = ? AND as_of = ?", [CADENCE, as_of])
        return ScoreSummary(as_of, 0, reason=why_no_model(con, as_of))
    version, trained_as_of = found
    if version not in models:
        models[version] = load_model(con, version, trained_as_of)
    model = models[version]

    label_points(
        con,
        f"SELECT customer_id, as_of AS t FROM {FEATURES_TABLE} WHERE cadence = ? AND as_of = ?",
        as_of,
        [CADENCE, as_of],
    )
    select, missing = _feature_select(con, model.features)
    if missing:
        log(f"churn scores {as_of:%Y-%m-%d}: model {version} features no longer computed (NULL): {missing}")
    frame = con.execute(
        f"""SELECT f.customer_id, {select}
            FROM {FEATURES_TABLE} AS f
            JOIN churn_labels AS l ON l.customer_id = f.customer_id AND l.t = f.as_of
            WHERE f.cadence = ? AND f.as_of = ? AND l.active_at_t
            ORDER BY f.customer_id""",
        [CADENCE, as_of],
    ).df()
    con.execute("DROP TABLE churn_labels")  # consumed
    x = frame[model.features].to_numpy(dtype=np.float64, na_value=np.nan)
    if len(frame):
        p = model.predict(x)
        deltas = model.contributions(x, p)
    else:
        p, deltas = np.zeros(0), np.zeros((0, len(model.features)))
    churn_scored = pd.DataFrame(  # noqa: F841 (read by the SQL)
        {"customer_id": frame["customer_id"], "p_churn_30d": p, "annual_value": frame["annual_value"]}
    )
    churn_contributions = (  # noqa: F841
        pd.DataFrame(deltas, columns=model.features)
        .assign(customer_id=frame["customer_id"].to_numpy())
        .melt(id_vars="customer_id", var_name="feature", value_name="delta")
    )
    con.execute("SET VARIABLE churn_as_of = ?::TIMESTAMP", [as_of])
    con.execute("SET VARIABLE churn_model_version = ?::VARCHAR", [version])
    con.execute("SET VARIABLE churn_high_risk = ?::DOUBLE", [tiers.high])
    con.execute("SET VARIABLE churn_medium_risk = ?::DOUBLE", [tiers.medium])
    with transaction(con):
        con.execute(f"DELETE FROM {SCORES_TABLE} WHERE cadence = ? AND as_of = ?", [CADENCE, as_of])
        con.execute(f"INSERT INTO {SCORES_TABLE} BY NAME {SCORES_SQL.read_text()}")
    counts = dict(
        con.execute(
            f"SELECT risk_tier, count(*) FROM {SCORES_TABLE} WHERE cadence = ? AND as_of = ? GROUP BY ALL",
            [CADENCE, as_of],
        ).fetchall()
    )
    return ScoreSummary(
        as_of,
        len(frame),
        version,
        tiers={tier: int(counts.get(tier, 0)) for tier in TIERS},
        mean_p=float(p.mean()) if len(p) else None,
    )
