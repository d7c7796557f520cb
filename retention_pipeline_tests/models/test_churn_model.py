"""The churn model's pieces on synthetic data: properties that hold whatever a retrain learns (calibration table
sums and order, monotone tiers, deterministic versions and samples) and a planted signal no single rule can capture."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.models.churn import CALIBRATION_TABLE, MODELS_TABLE, SCORES_SQL, training
from retention_pipeline.models.churn.dataset import TrainingSet, feature_columns
from retention_pipeline.models.churn.scoring import TIERS, Tiers
from retention_pipeline.models.churn.training import (
    INSUFFICIENT,
    TRAINED,
    LabelledRows,
    Settings,
    best_rule,
    calibration_table,
    split_days,
    store,
    train,
    train_week,
)

AS_OF = datetime(2026, 11, 15)
FEATURES = ["x1", "x2", "noise", "flag"]
SETTINGS = Settings(training_days=84, min_labelled_days=28, min_positives=20, max_training_rows=200_000)


def planted(days: int = 60, customers: int = 150, seed: int = 3) -> pd.DataFrame:
    """Churn iff x1 and x2 have the same sign (an XOR of two features), flipped for 5% of rows: each feature alone,
    at any threshold, says nothing; together they say almost everything."""
    rng = np.random.default_rng(seed)
    n = days * customers
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    churned = ((x1 > 0) == (x2 > 0)) ^ (rng.random(n) < 0.05)
    x1[rng.random(n) < 0.1] = np.nan  # NULL features stay NULL (the model handles them natively)
    first = AS_OF - timedelta(days=30 + days - 1)
    return pd.DataFrame(
        {
            "t": np.repeat([first + timedelta(days=i) for i in range(days)], customers),
            "customer_id": np.tile([f"c{i:03d}" for i in range(customers)], days),
            "x1": x1,
            "x2": x2,
            "noise": rng.normal(size=n),
            "flag": (rng.random(n) < 0.3).astype(float),
            "churned_30d": churned,
        }
    )


def training_set(frame: pd.DataFrame) -> TrainingSet:
    days = sorted(pd.to_datetime(frame["t"].unique()).to_pydatetime())
    return TrainingSet(AS_OF, days, FEATURES, len(frame), int(frame["churned_30d"].sum()), len(days))


@pytest.fixture(scope="module")
def trained():
    frame = planted()
    return frame, train(training_set(frame), frame, SETTINGS)


def test_a_planted_interaction_is_learned_and_beats_every_single_rule(trained):
    _, outcome = trained
    assert outcome.status == TRAINED
    assert outcome.metrics["roc_auc"] > outcome.baseline["roc_auc"] + 0.2
    assert outcome.metrics["brier"] < outcome.baseline["brier"]
    assert outcome.baseline["feature"] in FEATURES and outcome.baseline["rule"]
    gap = outcome.metrics["backtest"]["gap_days"]
    assert gap == 29  # the train labels end where the test starts: 60 days allow the full gap


def test_calibration_tables_sum_to_the_test_rows_and_are_ordered_by_predicted_p(trained):
    _, outcome = trained
    for scorer, table in outcome.calibration.groupby("scorer"):
        assert table["n"].sum() == outcome.rows_test, scorer
        assert list(table["decile"]) == list(range(1, 11))
        assert table["mean_predicted"].is_monotonic_increasing, scorer
        assert ((table["observed_rate"] >= 0) & (table["observed_rate"] <= 1)).all()


def test_the_stored_attempt_round_trips_with_its_calibration(trained, tmp_path):
    _, outcome = trained
    with duckdb.connect(str(tmp_path / "m.duckdb")) as con:
        store(con, outcome)
        store(con, outcome)  # the same attempt again replaces itself
        (rows,) = con.execute(f"SELECT count(*) FROM {MODELS_TABLE}").fetchone()
        n, scorers = con.execute(
            f"SELECT sum(n) FILTER (WHERE scorer = 'model'), count(DISTINCT scorer) FROM {CALIBRATION_TABLE}"
        ).fetchone()
        metrics = con.execute(f"SELECT metrics->>'roc_auc', baseline->>'rule' FROM {MODELS_TABLE}").fetchone()
    assert (rows, n, scorers) == (1, outcome.rows_test, 2)
    assert (
        float(metrics[0]) == pytest.approx(outcome.metrics["roc_auc"])
        and metrics[1] == outcome.baseline["rule"]
    )


def test_training_is_deterministic(trained):
    frame, outcome = trained
    again = train(
        training_set(frame), frame.sample(frac=1, random_state=1).sort_values(["t", "customer_id"]), SETTINGS
    )
    assert again.model_version == outcome.model_version
    assert again.metrics == outcome.metrics


def test_the_best_single_rule_finds_a_planted_threshold():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, size=(2000, 2))
    y = (x[:, 1] >= 7).astype(int)
    rule = best_rule(x, y, ["other", "signal"])
    assert (rule.feature, rule.op) == ("signal", ">=") and 6 <= rule.threshold <= 8
    assert rule.p_true > 0.9 and rule.p_false < 0.1
    boolean = best_rule(
        np.c_[rng.random(500) < 0.5].astype(float), np.r_[np.ones(250), np.zeros(250)], ["flag"]
    )
    assert boolean.op == "==" and str(boolean) == "flag = true"


def test_a_two_valued_score_still_fills_ten_deciles():
    y = np.array([0, 1] * 50)
    p = np.where(np.arange(100) < 80, 0.1, 0.6)
    table = calibration_table(y, p)
    assert table["n"].sum() == 100 and len(table) == 10 and table["mean_predicted"].is_monotonic_increasing


def test_the_row_cap_is_a_deterministic_sample_independent_of_row_order():
    frame = planted(days=10, customers=50)
    first, last = frame["t"].min(), frame["t"].max()

    def fetch(rows: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, int]:
        with duckdb.connect() as con:
            con.register("rows", rows)
            return LabelledRows(con, "rows", FEATURES).fetch(first, last, limit)

    kept, available = fetch(frame, 123)
    shuffled, _ = fetch(frame.sample(frac=1, random_state=7), 123)
    assert len(kept) == 123 and available == len(frame)
    key = ["t", "customer_id"]
    # The same rows, in (t, customer_id) order.
    assert kept[key].values.tolist() == shuffled[key].values.tolist()
    assert kept[key].values.tolist() == kept[key].sort_values(key).values.tolist()
    # A row's membership does not depend on the other rows: capping a subset keeps every kept row it contains.
    subset = frame.iloc[::2]
    rows = lambda f: set(map(tuple, f[key].astype(str).values.tolist()))  # noqa: E731
    assert rows(fetch(subset, 123)[0]) >= rows(kept) & rows(subset)
    everything, _ = fetch(frame, len(frame))
    assert len(everything) == len(frame)


@pytest.mark.parametrize("cap", [100, 250, 4000])
def test_train_week_never_fetches_more_rows_than_the_cap_into_pandas(tmp_path, monkeypatch, cap):
    """Whatever the labelled rows, every frame train_week pulls out of DuckDB (backtest train, test, final) holds
    at most RETENTION_CHURN_MAX_TRAINING_ROWS rows, and the training runs within its own memory limit."""
    frame = planted()  # 9,000 labelled rows
    seen: dict[str, object] = {"fetched": []}

    def labelled_rows_in(con, as_of, days, log, table=None):
        seen["limit_while_training"] = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM frame")
        return training_set(frame)

    original = LabelledRows.fetch

    def recording_fetch(self, first, last, limit):
        fetched, available = original(self, first, last, limit)
        seen["fetched"].append((len(fetched), available))
        return fetched, available

    monkeypatch.setattr(training, "build_training_set", labelled_rows_in)
    monkeypatch.setattr(LabelledRows, "fetch", recording_fetch)
    settings = Settings(84, 28, 20, max_training_rows=cap, memory_limit="100MB")
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        before = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        outcome = train_week(con, AS_OF, settings)
        after = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        stored = con.execute(
            f"SELECT rows_labelled, rows_train, rows_test, rows_final FROM {MODELS_TABLE}"
        ).fetchone()
    assert outcome.status == TRAINED, outcome.message
    assert len(seen["fetched"]) == 3  # backtest train, backtest test, final
    assert all(rows <= cap for rows, _ in seen["fetched"])
    assert all(rows == min(cap, available) for rows, available in seen["fetched"])
    assert stored[0] == len(frame) and all(rows <= cap for rows in stored[1:])
    with duckdb.connect() as other:
        other.execute("SET memory_limit = '100MB'")
        expected = other.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert seen["limit_while_training"] == expected and after == before  # restored after


def test_the_memory_limit_setting_is_checked_by_name(monkeypatch):
    for name, value in {
        "RETENTION_CHURN_TRAINING_DAYS": "84",
        "RETENTION_CHURN_MIN_LABELLED_DAYS": "28",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RETENTION_CHURN_MEMORY_LIMIT", "2 GB")
    assert Settings.from_env().memory_limit == "2 GB"
    monkeypatch.setenv("RETENTION_CHURN_MEMORY_LIMIT", "80%; DROP TABLE x")
    with pytest.raises(ConfigError, match="RETENTION_CHURN_MEMORY_LIMIT"):
        Settings.from_env()


def test_the_backtest_split_keeps_a_gap_when_it_can_and_says_so_when_it_cannot():
    days = [datetime(2026, 8, 1) + timedelta(days=i) for i in range(60)]
    train_days, test_days, gap = split_days(days)
    assert len(test_days) == 14 and test_days[-1] == days[-1]
    assert train_days[-1] + timedelta(days=30) == test_days[0] and gap == 29
    train_days, test_days, gap = split_days(days[:30])
    assert gap == 0 and train_days[-1] + timedelta(days=1) == test_days[0]


def test_insufficient_labels_name_the_numbers_and_the_setting():
    frame = planted(days=20)
    outcome = train(training_set(frame), frame, SETTINGS)
    assert outcome.status == INSUFFICIENT and outcome.model is None
    assert (
        "only 20 labelled days" in outcome.message
        and "RETENTION_CHURN_MIN_LABELLED_DAYS=28" in outcome.message
    )
    rare = planted()
    rare["churned_30d"] = rare.index < 5
    outcome = train(training_set(rare), rare, SETTINGS)
    assert outcome.status == INSUFFICIENT and "5 churned" in outcome.message
    assert "RETENTION_CHURN_MIN_POSITIVES=20" in outcome.message


def test_features_are_the_numeric_and_boolean_columns_except_keys_and_flags():
    described = [
        ("customer_id", "VARCHAR"), ("cadence", "VARCHAR"), ("as_of", "TIMESTAMP"), ("usage_7d", "DOUBLE"),
        ("contract_end", "TIMESTAMP"), ("last_active_day", "DATE"), ("days_to_renewal", "BIGINT"),
        ("has_failed_payment", "BOOLEAN"), ("is_archived", "BOOLEAN"), ("do_not_retarget", "BOOLEAN"),
        ("credit_used_pct", "DECIMAL(18,3)"), ("brand_new_column", "INTEGER"),
    ]  # fmt: skip
    assert feature_columns(described) == [
        "usage_7d", "days_to_renewal", "has_failed_payment", "credit_used_pct", "brand_new_column",
    ]  # fmt: skip


def _scores(p: list[float], annual_value: list[float | None], tiers: Tiers) -> pd.DataFrame:
    churn_scored = pd.DataFrame(  # noqa: F841 (read by the SQL)
        {"customer_id": [f"c{i}" for i in range(len(p))], "p_churn_30d": p, "annual_value": annual_value}
    )
    churn_contributions = pd.DataFrame(  # noqa: F841
        {
            "customer_id": ["c0"] * 5 + ["c1"],
            "feature": ["a", "b", "c", "d", "e", "a"],
            "delta": [0.30, -0.2, 0.004, 0.05, 0.11, 0.001],
        }
    )
    with duckdb.connect() as con:
        con.execute("SET VARIABLE churn_as_of = TIMESTAMP '2026-11-20'")
        con.execute("SET VARIABLE churn_model_version = 'm'")
        con.execute("SET VARIABLE churn_high_risk = ?::DOUBLE", [tiers.high])
        con.execute("SET VARIABLE churn_medium_risk = ?::DOUBLE", [tiers.medium])
        return con.execute(SCORES_SQL.read_text()).df().set_index("customer_id")


def test_risk_tiers_are_monotone_in_p_and_deciles_in_revenue_at_risk():
    rng = np.random.default_rng(5)
    p = list(rng.random(200))
    value = [None if i % 10 == 0 else float(v) for i, v in enumerate(rng.uniform(100, 10_000, 200))]
    tiers = Tiers(high=0.5, medium=0.2)
    scores = _scores(p, value, tiers).sort_values("p_churn_30d")
    rank = scores["risk_tier"].map({tier: len(TIERS) - i for i, tier in enumerate(TIERS)})
    assert rank.is_monotonic_increasing and set(scores["risk_tier"]) == set(TIERS)
    assert all(scores["risk_tier"] == [tiers.tier(x) for x in scores["p_churn_30d"]])

    valued = scores[scores["annual_value"].notna()].sort_values("expected_revenue_at_risk")
    assert valued["revenue_at_risk_decile"].is_monotonic_increasing
    assert set(valued["revenue_at_risk_decile"]) == set(range(1, 11))
    assert np.allclose(valued["expected_revenue_at_risk"], valued["p_churn_30d"] * valued["annual_value"])
    unvalued = scores[scores["annual_value"].isna()]
    assert (
        unvalued["revenue_at_risk_decile"].isna().all() and unvalued["expected_revenue_at_risk"].isna().all()
    )

    assert scores.loc["c0", "top_features"] == "a +0.30; e +0.11; d +0.05"  # top 3 positive, largest first
    assert pd.isna(scores.loc["c1", "top_features"])  # +0.001 rounds to nothing
    assert (scores["cadence"] == "daily").all() and (scores["model_version"] == "m").all()


def test_tier_thresholds_are_checked_by_name(monkeypatch):
    monkeypatch.setenv("RETENTION_CHURN_HIGH_RISK", "0.3")
    monkeypatch.setenv("RETENTION_CHURN_MEDIUM_RISK", "0.4")
    with pytest.raises(
        ConfigError, match="RETENTION_CHURN_MEDIUM_RISK=0.4 must be below RETENTION_CHURN_HIGH_RISK"
    ):
        Tiers.from_env()
    monkeypatch.setenv("RETENTION_CHURN_HIGH_RISK", "1.5")
    with pytest.raises(ConfigError, match="RETENTION_CHURN_HIGH_RISK"):
        Tiers.from_env()
    monkeypatch.delenv("RETENTION_CHURN_HIGH_RISK")
    monkeypatch.delenv("RETENTION_CHURN_MEDIUM_RISK")
    assert Tiers.from_env() == Tiers(0.5, 0.2)
