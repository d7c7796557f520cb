"""Fit, backtest and store the churn model of one weekly partition.

scikit-learn's HistGradientBoostingClassifier (NaN-aware gradient boosting) inside CalibratedClassifierCV, so
p_churn_30d is a probability, not a score. The backtest holds out the newest labelled days; the baseline is the best
single threshold rule on the same training rows. docs/churn-model.md explains the choices.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from retention_pipeline.config import env_parsed, positive_int
from retention_pipeline.models.churn import (
    CALIBRATION_TABLE,
    HORIZON_DAYS,
    MODELS_TABLE,
    TRAINING_SET_TABLE,
)
from retention_pipeline.models.churn.dataset import TrainingSet, build_training_set
from retention_pipeline.models.churn.tables import create_typed_tables
from retention_pipeline.warehouse import transaction

TRAINED, INSUFFICIENT = "trained", "insufficient_data"
TEST_DAYS = 14  # the backtest's test split: the newest labelled days
MIN_TRAIN_DAYS = 14  # below this many days left for training, the backtest drops the gap
RANDOM_STATE = 0
CALIBRATION_FOLDS = 3
# Isotonic calibration fits a step function: it needs many rows per calibration fold (scikit-learn's guidance: well
# over 1,000) and enough churners for its steps; below that the two-parameter sigmoid generalises better (it did on the
# sandbox, where folds hold ~300 churners).
ISOTONIC_MIN_ROWS_PER_FOLD, ISOTONIC_MIN_POSITIVES_PER_FOLD = 1000, 500
GBM_PARAMS = {
    "learning_rate": 0.05,
    "max_iter": 200,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": False,  # a fixed number of trees: the same rows always give the same model
    "random_state": RANDOM_STATE,
}
RULE_QUANTILES = np.linspace(0.05, 0.95, 19)
# Everything about how a model is fit, part of its version: a change here is a new model even on the same rows.
MODEL_SPEC = {
    "gbm": GBM_PARAMS,
    "calibration_folds": CALIBRATION_FOLDS,
    "folds_group": "customer_id",
    "isotonic_min_per_fold": [ISOTONIC_MIN_ROWS_PER_FOLD, ISOTONIC_MIN_POSITIVES_PER_FOLD],
    "min_feature_rows": "min_samples_leaf",
}


MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def _memory_limit(raw: str) -> str:
    if not MEMORY_LIMIT.fullmatch(raw.strip()):
        raise ValueError("not a size such as 1GB or 500MB")
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    training_days: int
    min_labelled_days: int
    min_positives: int
    max_training_rows: int
    # DuckDB's memory_limit while training (None: leave the connection's as it is). Not part of the model version:
    # it changes where DuckDB keeps intermediate rows, never which rows.
    memory_limit: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            training_days=positive_int("RETENTION_CHURN_TRAINING_DAYS", minimum=TEST_DAYS + 1, maximum=730),
            min_labelled_days=positive_int("RETENTION_CHURN_MIN_LABELLED_DAYS", minimum=2, maximum=730),
            min_positives=positive_int("RETENTION_CHURN_MIN_POSITIVES", maximum=1_000_000),
            max_training_rows=positive_int(
                "RETENTION_CHURN_MAX_TRAINING_ROWS", minimum=100, maximum=100_000_000
            ),
            memory_limit=env_parsed(
                "RETENTION_CHURN_MEMORY_LIMIT", _memory_limit, what="expected a size such as 1GB or 500MB"
            ),
        )

    def versioned(self) -> dict:
        """The settings that decide the model, for its version digest."""
        return {k: v for k, v in self.__dict__.items() if k != "memory_limit"}


@dataclass(frozen=True)
class Rule:
    """A single threshold rule: p = p_true where `feature op threshold` holds (NULL never holds), else p_false."""

    feature: str
    op: str  # >=, <= or == (a boolean feature == 1)
    threshold: float
    p_true: float
    p_false: float

    def __str__(self) -> str:
        if self.op == "==":
            return f"{self.feature} = true"
        return f"{self.feature} {self.op} {self.threshold:g}"

    def holds(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            if self.op == ">=":
                return x >= self.threshold
            if self.op == "<=":
                return x <= self.threshold
            return x == self.threshold

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.where(self.holds(x), self.p_true, self.p_false)


@dataclass
class Outcome:
    """One training attempt, as stored in analytics.churn_models."""

    model_version: str
    trained_as_of: datetime
    status: str
    message: str
    features: list[str]
    window: tuple[datetime | None, datetime | None]
    labelled_days: int
    rows_labelled: int
    positives_labelled: int
    rows_train: int = 0
    positives_train: int = 0
    rows_test: int = 0
    positives_test: int = 0
    rows_final: int = 0
    metrics: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    calibration: pd.DataFrame | None = None  # scorer, decile, n, mean_predicted, observed_rate
    calibration_method: str | None = None
    fit_seconds: float | None = None
    sklearn_version: str | None = None
    model: bytes | None = None
    trained_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))


# ------------------------------------------------------------------------------------------------ model and rule


def calibration_method(rows: int, positives: int) -> str:
    per_fold = CALIBRATION_FOLDS
    enough = (
        rows / per_fold >= ISOTONIC_MIN_ROWS_PER_FOLD
        and positives / per_fold >= ISOTONIC_MIN_POSITIVES_PER_FOLD
    )
    return "isotonic" if enough else "sigmoid"


def usable_features(x: np.ndarray, features: list[str]) -> list[str]:
    """The features with at least min_samples_leaf known values in the fit rows: fewer cannot make a split of their
    own, and a column with none would break the binning of a calibration fold."""
    known = (~np.isnan(x)).sum(axis=0)
    return [
        name for name, count in zip(features, known, strict=True) if count >= GBM_PARAMS["min_samples_leaf"]
    ]


def one_thread():
    """scikit-learn's OpenMP threads limited to one while fitting or predicting. The trees of a few hundred thousand
    rows fit in seconds on one core, while OpenMP threads on a host whose cores are busy elsewhere (other workers,
    a test run in parallel) can wait on each other a hundred times longer than they compute."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def fit_model(x: np.ndarray, y: np.ndarray, customers: np.ndarray):
    """A calibrated gradient-boosted classifier; deterministic for the same rows (fixed trees, seeded folds).

    The calibration folds split customers, not rows: a customer's consecutive days are near copies (and its revenue
    to date all but names it), so a fold that kept other days of the same customer would look easier than a new
    week does, and the calibrator would learn to be overconfident."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=CALIBRATION_FOLDS, shuffle=True, random_state=RANDOM_STATE)
    model = CalibratedClassifierCV(
        HistGradientBoostingClassifier(**GBM_PARAMS),
        method=calibration_method(len(y), int(y.sum())),
        cv=list(folds.split(x, y, groups=customers)),
    )
    with one_thread():
        return model.fit(x, y)


def _entropy(positives: np.ndarray, n: np.ndarray) -> np.ndarray:
    """n × binary entropy of the group's churn rate (the training log loss of predicting that rate)."""
    from scipy.special import xlogy

    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, positives / np.maximum(n, 1), 0.0)
    return -(xlogy(positives, p) + xlogy(n - positives, 1 - p))


def best_rule(x: np.ndarray, y: np.ndarray, features: list[str]) -> Rule:
    """The single threshold rule with the lowest training log loss, its probabilities the training churn rates
    where it holds and where it does not. Candidates: each feature at its 5%..95% quantiles, both directions; a
    0/1 feature as itself."""
    n, positives = len(y), float(y.sum())
    best: tuple[float, Rule] | None = None
    for j, name in enumerate(features):
        column = x[:, j]
        known = column[~np.isnan(column)]
        if known.size == 0:
            continue
        values = np.unique(known)
        if set(values.tolist()) <= {0.0, 1.0}:
            candidates = [("==", 1.0)]
        else:
            thresholds = np.unique(np.quantile(known, RULE_QUANTILES))
            candidates = [(op, float(v)) for v in thresholds for op in (">=", "<=")]
        for op, threshold in candidates:
            holds = Rule(name, op, threshold, 0, 0).holds(column)
            n_true = float(holds.sum())
            if n_true in (0, n):
                continue
            pos_true = float(y[holds].sum())
            loss = float(
                _entropy(np.array([pos_true]), np.array([n_true]))[0]
                + _entropy(np.array([positives - pos_true]), np.array([n - n_true]))[0]
            )
            if best is None or loss < best[0] - 1e-12:
                rule = Rule(name, op, threshold, pos_true / n_true, (positives - pos_true) / (n - n_true))
                best = (loss, rule)
    if best is None:  # every feature constant: the base rate
        return Rule(features[0], "==", np.nan, positives / n, positives / n)
    return best[1]


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Test rows sorted by predicted p and cut into `bins` groups of (nearly) equal size: decile, n, mean
    predicted p, observed churn rate. Ties are cut by position, so a two-valued rule still fills every decile."""
    order = np.argsort(p, kind="stable")
    rows = []
    for decile, part in enumerate(np.array_split(order, bins), start=1):
        if part.size:
            rows.append((decile, int(part.size), float(p[part].mean()), float(y[part].mean())))
    return pd.DataFrame(rows, columns=["decile", "n", "mean_predicted", "observed_rate"])


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "base_rate": float(y.mean()),
    }


# ------------------------------------------------------------------------------------------------ data


# The row cap's sample key: MD5 of (customer_id, t), stable across DuckDB versions (its hash() is not), so the
# same week trained again after an upgrade keeps the same rows.
SAMPLE_KEY = "md5_number(customer_id || '|' || strftime(t, '%Y-%m-%d %H:%M:%S'))"


@dataclass(frozen=True)
class LabelledRows:
    """The labelled rows (t, customer_id, features..., churned_30d) in a DuckDB table; only what a fit or a
    prediction uses is fetched into pandas, capped in SQL."""

    con: duckdb.DuckDBPyConnection
    table: str
    features: list[str]

    def summary(self) -> tuple[list[datetime], int, int]:
        """(labelled days, rows, churned rows)."""
        days = [d for (d,) in self.con.execute(f"SELECT DISTINCT t FROM {self.table} ORDER BY t").fetchall()]
        rows, positives = self.con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE churned_30d) FROM {self.table}"
        ).fetchone()
        return days, rows, positives

    def fetch(self, first: datetime, last: datetime, limit: int) -> tuple[pd.DataFrame, int]:
        """(the rows with first <= t <= last, at most `limit` of them, ordered by t and customer_id; how many rows
        the range holds). Past the cap, the rows with the smallest SAMPLE_KEY are kept: a deterministic sample in
        which a row's membership depends neither on the other rows nor on their order."""
        columns = ", ".join(f'CAST("{name}" AS DOUBLE) AS "{name}"' for name in self.features)
        where, params = f"FROM {self.table} WHERE t BETWEEN ? AND ?", [first, last]
        (available,) = self.con.execute(f"SELECT count(*) {where}", params).fetchone()
        frame = self.con.execute(
            f"""SELECT t, customer_id, {columns}, churned_30d
                FROM (SELECT * {where} ORDER BY {SAMPLE_KEY}, customer_id, t LIMIT ?)
                ORDER BY t, customer_id""",
            [*params, limit],
        ).df()
        return frame, available


@contextmanager
def bounded_memory(con: duckdb.DuckDBPyConnection, limit: str | None) -> Iterator[None]:
    """DuckDB's memory_limit set to `limit` for the block, the connection's previous limit restored after (it is
    the database instance's setting, shared by every connection to it).

    DuckDB's default limit is 80% of RAM, so the training set's temp tables never spill: at 100k customers they
    pushed the step past 10 GB. With a limit they spill to the temp directory, which is DuckDB's default
    `<database file>.tmp` next to the file. If spilling was switched off (an empty temp_directory) it is set to that
    folder again, or to one in the system temp directory for an in-memory database."""
    if limit is None:
        yield
        return
    previous, temp = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    ).fetchone()
    if not temp:
        (path,) = con.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchone()
        folder = f"{path}.tmp" if path else str(Path(tempfile.gettempdir()) / "retention-duckdb.tmp")
        con.execute(f"SET temp_directory = '{folder.replace(chr(39), chr(39) * 2)}'")
    con.execute(f"SET memory_limit = '{limit}'")  # validated by Settings: digits and a unit

    def restore() -> None:
        con.execute("RESET memory_limit")  # exact when the previous limit was DuckDB's default
        if con.execute("SELECT current_setting('memory_limit')").fetchone()[0] != previous:
            con.execute(f"SET memory_limit = '{previous}'")

    try:
        yield
    except BaseException:
        # On a connection DuckDB invalidated the restore fails too; the error being raised is what matters.
        with suppress(duckdb.Error):
            restore()
        raise
    restore()


def matrix(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    return frame[features].to_numpy(dtype=np.float64, na_value=np.nan)


def split_days(days: list, test_days: int = TEST_DAYS) -> tuple[list, list, int]:
    """(train days, test days, gap in days) of the backtest: the newest `test_days` labelled days are the test; the
    train days end 30 days before the first test day, so no training label looks past the test's start, unless that
    leaves fewer than MIN_TRAIN_DAYS (then no gap, said in the metrics)."""
    days = sorted(days)
    test = days[-test_days:]
    cutoff = test[0] - timedelta(days=HORIZON_DAYS)
    train = [d for d in days if d <= cutoff]
    if len(train) >= MIN_TRAIN_DAYS:
        return train, test, (test[0] - train[-1]).days - 1
    return [d for d in days if d < test[0]], test, 0


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def _version(as_of: datetime, digest: str) -> str:
    return f"churn-{as_of:%Y-%m-%d}-{digest}"


# ------------------------------------------------------------------------------------------------ the attempt


def train(
    training: TrainingSet,
    rows: LabelledRows | pd.DataFrame,
    settings: Settings,
    log: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Backtest and fit on the labelled rows (t, customer_id, features..., churned_30d), or explain why not
    (status insufficient_data). `rows` is a DuckDB table (train_week) or a DataFrame (read through DuckDB the same
    way); either way pandas only ever holds the capped backtest train, test and final rows."""
    if isinstance(rows, pd.DataFrame):
        with duckdb.connect() as con:
            con.register("churn_rows", rows)
            return train(training, LabelledRows(con, "churn_rows", training.features), settings, log)
    import sklearn

    features = training.features
    days, labelled, positives = rows.summary()
    window = (training.days[0], training.days[-1]) if training.days else (None, None)
    counts = {"labelled_days": len(days), "rows_labelled": labelled, "positives_labelled": positives}
    negatives = labelled - positives
    cap = settings.max_training_rows

    def insufficient(message: str, **extra) -> Outcome:
        digest = _digest(training.as_of, settings.versioned(), features, counts, message)
        return Outcome(
            _version(training.as_of, digest), training.as_of, INSUFFICIENT, message, features, window,
            **counts, **extra,
        )  # fmt: skip

    if not features:
        return insufficient("the feature SQL has no numeric or boolean column to learn from.")
    if len(days) < settings.min_labelled_days:
        return insufficient(
            f"only {len(days)} labelled days (t with t + {HORIZON_DAYS} d <= {training.as_of:%Y-%m-%d} and at "
            f"least one active customer) in the training window; RETENTION_CHURN_MIN_LABELLED_DAYS="
            f"{settings.min_labelled_days} are needed. More usage history (or a later week) fixes this."
        )
    if min(positives, negatives) < settings.min_positives:
        return insufficient(
            f"{positives} churned and {negatives} retained labelled rows over {len(days)} days; "
            f"RETENTION_CHURN_MIN_POSITIVES={settings.min_positives} of each are needed."
        )

    train_days, test_days, gap = split_days(days)
    # The test days are capped like the fits: a sample by the same key is independent of the label and of every
    # feature, so the metrics stay unbiased estimates of the whole test's; past the cap (200,000 rows by default)
    # their sampling error is far below the week-to-week movement. metrics.backtest says how many rows it stood for.
    train_rows, _ = rows.fetch(train_days[0], train_days[-1], cap)
    test_rows, test_available = rows.fetch(test_days[0], test_days[-1], cap)
    y_train = train_rows["churned_30d"].to_numpy(dtype=np.int8)
    y_test = test_rows["churned_30d"].to_numpy(dtype=np.int8)
    split = {
        "rows_train": len(train_rows),
        "positives_train": int(y_train.sum()),
        "rows_test": len(test_rows),
        "positives_test": int(y_test.sum()),
    }
    if len(set(y_train.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        return insufficient(
            f"the backtest split has one class only (train {split['positives_train']}/{split['rows_train']} "
            f"churned, test {split['positives_test']}/{split['rows_test']} churned over the newest {TEST_DAYS} "
            "days); more history (RETENTION_CHURN_TRAINING_DAYS) or churn is needed.",
            **split,
        )

    churned_customers = train_rows.loc[train_rows["churned_30d"].astype(bool), "customer_id"].nunique()
    retained_customers = train_rows.loc[~train_rows["churned_30d"].astype(bool), "customer_id"].nunique()
    if min(churned_customers, retained_customers) < CALIBRATION_FOLDS:
        return insufficient(
            f"the backtest's training days hold {churned_customers} churned and {retained_customers} retained "
            f"customers; calibration needs {CALIBRATION_FOLDS} of each (one per fold). More history "
            "(RETENTION_CHURN_TRAINING_DAYS) or more customers is needed.",
            **split,
        )
    log(
        f"churn backtest: train {split['rows_train']} rows over {len(train_days)} days, test {split['rows_test']} "
        f"rows over {len(test_days)} days (of {test_available}), gap {gap} days"
    )
    x_train, x_test = matrix(train_rows, features), matrix(test_rows, features)
    used = usable_features(x_train, features)
    if not used:
        return insufficient(
            f"no feature has {GBM_PARAMS['min_samples_leaf']} known values in the backtest's training rows.",
            **split,
        )
    columns = [features.index(name) for name in used]
    backtest_model = fit_model(x_train[:, columns], y_train, train_rows["customer_id"].to_numpy())
    with one_thread():
        p_model = backtest_model.predict_proba(x_test[:, columns])[:, 1]
    rule = best_rule(x_train, y_train, features)
    p_rule = rule.predict(x_test[:, features.index(rule.feature)])
    calibration = pd.concat(
        [
            calibration_table(y_test, p_model).assign(scorer="model"),
            calibration_table(y_test, p_rule).assign(scorer="baseline"),
        ]
    )
    metrics = scores(y_test, p_model) | {
        "backtest": {
            "train_days": [f"{train_days[0]:%Y-%m-%d}", f"{train_days[-1]:%Y-%m-%d}"],
            "test_days": [f"{test_days[0]:%Y-%m-%d}", f"{test_days[-1]:%Y-%m-%d}"],
            "gap_days": gap,
            "test_rows_labelled": test_available,  # rows_test of them were predicted (a sample past the cap)
        }
    }
    baseline = {
        "rule": str(rule),
        "feature": rule.feature,
        "op": rule.op,
        "threshold": None if np.isnan(rule.threshold) else rule.threshold,
        "p_true": rule.p_true,
        "p_false": rule.p_false,
    } | scores(y_test, p_rule)
    # The backtest's frames are released before the final rows are fetched: pandas holds one of the two at a time.
    del train_rows, test_rows, x_train, x_test, backtest_model

    final_rows, _ = rows.fetch(days[0], days[-1], cap)
    used = usable_features(matrix(final_rows, features), features)
    metrics["unused_features"] = [name for name in features if name not in used]
    x_final = matrix(final_rows, used)
    y_final = final_rows["churned_30d"].to_numpy(dtype=np.int8)
    started = time.monotonic()
    final_model = fit_model(x_final, y_final, final_rows["customer_id"].to_numpy())
    fit_seconds = time.monotonic() - started
    medians = {name: float(np.nanmedian(x_final[:, j])) for j, name in enumerate(used)}
    method = calibration_method(len(y_final), int(y_final.sum()))
    digest = _digest(
        training.as_of,
        settings.versioned(),
        features,
        MODEL_SPEC,
        sklearn.__version__,
        pd.util.hash_pandas_object(final_rows[["customer_id", "t", *features, "churned_30d"]], index=False)
        .to_numpy()
        .tobytes(),
    )
    bundle = {"estimator": final_model, "features": used, "medians": medians, "calibration": method}
    return Outcome(
        _version(training.as_of, digest), training.as_of, TRAINED,
        f"trained on {len(final_rows)} rows ({int(y_final.sum())} churned) over {len(days)} days; backtest ROC AUC "
        f"{metrics['roc_auc']:.3f} vs {baseline['roc_auc']:.3f} for the best single rule ({rule})",
        used, window, **counts, **split, rows_final=len(final_rows), metrics=metrics, baseline=baseline,
        calibration=calibration, calibration_method=method, fit_seconds=fit_seconds,
        sklearn_version=sklearn.__version__, model=pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL),
    )  # fmt: skip


def _json(value: dict) -> str | None:
    return json.dumps(value, allow_nan=False) if value else None


def store(con: duckdb.DuckDBPyConnection, outcome: Outcome) -> None:
    """One row in analytics.churn_models (replacing an identical earlier attempt) and its calibration rows."""
    create_typed_tables(con)
    with transaction(con):
        con.execute(f"DELETE FROM {MODELS_TABLE} WHERE model_version = ?", [outcome.model_version])
        con.execute(f"DELETE FROM {CALIBRATION_TABLE} WHERE model_version = ?", [outcome.model_version])
        con.execute(
            f"""INSERT INTO {MODELS_TABLE} BY NAME SELECT
                ?::VARCHAR AS model_version, ?::TIMESTAMP AS trained_as_of, ?::TIMESTAMP AS trained_at,
                ?::VARCHAR AS status, ?::VARCHAR AS message, ?::VARCHAR[] AS features,
                ?::TIMESTAMP AS window_start, ?::TIMESTAMP AS window_end, ?::INTEGER AS labelled_days,
                ?::BIGINT AS rows_labelled, ?::BIGINT AS positives_labelled, ?::BIGINT AS rows_train,
                ?::BIGINT AS positives_train, ?::BIGINT AS rows_test, ?::BIGINT AS positives_test,
                ?::BIGINT AS rows_final, ?::JSON AS metrics, ?::JSON AS baseline, ?::VARCHAR AS calibration_method,
                ?::DOUBLE AS fit_seconds, ?::VARCHAR AS sklearn_version, ?::BLOB AS model""",
            [
                outcome.model_version, outcome.trained_as_of, outcome.trained_at, outcome.status, outcome.message,
                outcome.features, *outcome.window, outcome.labelled_days, outcome.rows_labelled,
                outcome.positives_labelled, outcome.rows_train, outcome.positives_train, outcome.rows_test,
                outcome.positives_test, outcome.rows_final, _json(outcome.metrics), _json(outcome.baseline), outcome.calibration_method, outcome.fit_seconds,
                outcome.sklearn_version, outcome.model,
            ],
        )  # fmt: skip
        if outcome.calibration is not None:
            calibration = outcome.calibration.assign(model_version=outcome.model_version)  # noqa: F841
            con.execute(f"INSERT INTO {CALIBRATION_TABLE} BY NAME SELECT * FROM calibration")


def train_week(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    settings: Settings | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Build the training set for the weekly partition ending at `as_of` straight into
    analytics.churn_training_set, train (or not) from it and store the attempt, within
    RETENTION_CHURN_MEMORY_LIMIT."""
    settings = settings or Settings.from_env()
    with bounded_memory(con, settings.memory_limit):
        con.execute("CREATE SCHEMA IF NOT EXISTS analytics")
        training = build_training_set(con, as_of, settings.training_days, log, table=TRAINING_SET_TABLE)
        outcome = train(training, LabelledRows(con, TRAINING_SET_TABLE, training.features), settings, log)
        store(con, outcome)
    return outcome
