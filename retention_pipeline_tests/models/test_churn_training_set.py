"""The churn label and training set on hand-built accounts: labels by hand, point in time (data after t changes no
feature at t, data after t + 30 d no label either), and the assets' fail-safe and point-in-time scoring."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta

import dagster as dg
import numpy as np
import pytest

from retention_pipeline.models.assets import build_model, set_run_variables
from retention_pipeline.models.churn import MODELS_TABLE, SCORES_TABLE
from retention_pipeline.models.churn.assets import churn_model_weekly, churn_scores_daily
from retention_pipeline.models.churn.dataset import LABEL_COLUMNS, build_training_set, feature_model
from retention_pipeline.models.churn.scoring import Tiers, score_partition
from retention_pipeline.models.churn.training import TRAINED, Outcome, store
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.source.tables import create_raw_tables
from retention_pipeline.warehouse import DuckDBWarehouse

RAW = {"raw.metronome_customers", "raw.metronome_usage", "raw.metronome_billable_metrics",
       "raw.metronome_contracts", "raw.metronome_invoices", "raw.metronome_balances", "raw.contacts"}  # fmt: skip
T = datetime(2026, 10, 1)  # the point every test looks at
W = T + timedelta(days=30)  # the weekly as_of whose newest labelled t is T
FIRST_DAY = datetime(2026, 8, 1)
LAST_DAY = datetime(2026, 11, 29)


def days(first: datetime, last: datetime, every: int = 1) -> list[datetime]:
    return [first + timedelta(days=i) for i in range(0, (last - first).days + 1, every)]


# customer: (active days, archived_at)
ACCOUNTS = {
    "A": (days(FIRST_DAY, LAST_DAY), None),  # steady: not churned
    "B": (days(FIRST_DAY, datetime(2026, 10, 9)), None),  # last active 10-09 < t + 16 d: lapsed
    "C": (days(FIRST_DAY, LAST_DAY), datetime(2026, 10, 20)),  # archived in (t, t + 30 d]
    "D": (days(FIRST_DAY, LAST_DAY), None),  # contract ends 10-15, no renewal
    "E": (days(FIRST_DAY, LAST_DAY), None),  # contract ends 10-15, renewed the same instant
    "F": (days(FIRST_DAY, datetime(2026, 9, 9)), None),  # no usage in [t - 14 d, t): not active
    "G": (days(FIRST_DAY, LAST_DAY), datetime(2026, 9, 20)),  # archived before t: not active
    "H": (days(FIRST_DAY, LAST_DAY, every=3), None),  # every third day: a rhythm, not a lapse
}
CONTRACTS = [  # id, customer, starting_at, ending_before
    ("cA", "A", "2026-01-01", None),
    ("cD", "D", "2026-01-01", "2026-10-15"),
    ("cE1", "E", "2026-01-01", "2026-10-15"),
    ("cE2", "E", "2026-10-15", "2027-10-15"),
]
INVOICES = [  # id, customer, status, issued_at, external_status, total
    ("iA1", "A", "FINALIZED", "2026-08-01", "PAID", 1000.0),
    ("iA2", "A", "FINALIZED", "2026-09-01", "PAID", 1200.0),
    ("iE1", "E", "FINALIZED", "2026-09-01", "PAID", 900.0),
]
EXPECTED_LABELS = {  # customer: (churned, lapsed, archived, contract_ended) at T
    "A": (False, False, False, False),
    "B": (True, True, False, False),
    "C": (True, False, True, False),
    "D": (True, False, False, True),
    "E": (False, False, False, False),
    "H": (False, False, False, False),
}


def add_usage(con, customer: str, active: list[datetime], value: float = 10.0) -> None:
    con.executemany(
        "INSERT INTO raw.metronome_usage VALUES (?, 'm_api', 'api_calls', 'DAY', ?, ?, ?, now())",
        [(customer, d, d + timedelta(days=1), value) for d in active],
    )


def add_contract(con, contract_id, customer, starting_at, ending_before) -> None:
    con.execute(
        "INSERT INTO raw.metronome_contracts (id, customer_id, starting_at, ending_before, raw, extracted_at) "
        "VALUES (?, ?, ?, ?, '{}', now())",
        [contract_id, customer, starting_at, ending_before],
    )


def add_invoice(con, invoice_id, customer, status, issued_at, external_status, total) -> None:
    con.execute(
        "INSERT INTO raw.metronome_invoices (id, customer_id, status, issued_at, external_status, total, raw, "
        "extracted_at) VALUES (?, ?, ?, ?, ?, ?, '{}', now())",
        [invoice_id, customer, status, issued_at, external_status, total],
    )


def archive(con, customer: str, at: datetime) -> None:
    con.execute(
        "UPDATE raw.metronome_customers SET archived_at = ?, is_archived = true WHERE id = ?", [at, customer]
    )


def rebuild_staging(con) -> None:
    """The staging models over the (changed) raw tables; the training set evaluates the features itself."""
    set_run_variables(con, "daily", W)
    for model in load_project(SQL_ROOT, RAW):
        if model.schema == "staging":
            build_model(con, model)


@pytest.fixture
def warehouse(tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "churn.duckdb"))
    with warehouse.connect() as con:
        create_raw_tables(con)
        con.executemany(
            "INSERT INTO raw.metronome_customers (id, created_at, archived_at, is_archived, custom_fields, raw, "
            "extracted_at) VALUES (?, '2025-01-01', ?, ?, '{}', '{}', now())",
            [(c, archived, archived is not None) for c, (_, archived) in ACCOUNTS.items()],
        )
        con.execute(
            "INSERT INTO raw.metronome_billable_metrics (id, name, raw, extracted_at) "
            "VALUES ('m_api', 'api_calls', '{}', now())"
        )
        for customer, (active, _) in ACCOUNTS.items():
            add_usage(con, customer, active)
        for contract in CONTRACTS:
            add_contract(con, *contract)
        for invoice in INVOICES:
            add_invoice(con, *invoice)
        rebuild_staging(con)
    return warehouse


def rows_at(con, as_of: datetime, training_days: int = 1, t: datetime = T) -> dict[str, dict]:
    """The training rows for t (by customer) of the weekly partition ending at `as_of`."""
    rebuild_staging(con)
    build_training_set(con, as_of, training_days)
    result = con.execute("SELECT * EXCLUDE (trained_as_of) FROM churn_training WHERE t = ?", [t])
    names = [d[0] for d in result.description]
    return {row[names.index("customer_id")]: dict(zip(names, row, strict=True)) for row in result.fetchall()}


def features_only(rows: dict[str, dict]) -> dict[str, dict]:
    return {c: {k: v for k, v in row.items() if k not in LABEL_COLUMNS} for c, row in rows.items()}


def test_labels_match_the_definition_on_hand_built_accounts(warehouse):
    with warehouse.connect() as con:
        rows = rows_at(con, W)
        feature_sql = feature_model().sql  # evaluated at T, the run variables rows_at left set
        feature_sql_columns = [name for name, *_ in con.execute(f"DESCRIBE {feature_sql}").fetchall()]
    assert set(rows) == set(EXPECTED_LABELS)  # F (idle for 3 weeks) and G (archived before t) are not active
    labels = {c: tuple(row[k] for k in LABEL_COLUMNS) for c, row in rows.items()}
    assert labels == EXPECTED_LABELS
    # Every column the feature SQL has now (a column the lead adds is carried without touching the training set).
    assert list(rows["A"]) == [
        "t",
        *[c for c in feature_sql_columns if c not in ("cadence", "as_of")],
        *LABEL_COLUMNS,
    ]
    assert {"usage_7d", "days_since_last_usage"} <= set(feature_sql_columns)


def test_a_label_is_unknown_until_its_30_days_have_passed(warehouse):
    with warehouse.connect() as con:
        assert rows_at(con, W - timedelta(hours=1), t=T) == {}  # t + 30 d is after the data horizon


def test_data_after_t_changes_no_feature_at_t_and_data_after_t_plus_30_days_no_label(warehouse):
    with warehouse.connect() as con:
        before = rows_at(con, W)
        changed_later = rows_at(con, W + timedelta(days=5), t=T + timedelta(days=5))

        # After t, inside the label window: usage, an invoice, contracts, archiving.
        con.execute(
            "UPDATE raw.metronome_usage SET value = 1000 WHERE customer_id = 'A' AND start_timestamp >= ?",
            [T],
        )
        add_usage(con, "F", days(T + timedelta(days=1), T + timedelta(days=4)))  # F comes back after t
        add_invoice(con, "iA3", "A", "FINALIZED", T + timedelta(days=1), "PAID", 5000.0)
        add_invoice(con, "iE2", "E", "FINALIZED", T + timedelta(days=2), "PAYMENT_FAILED", 900.0)
        add_contract(con, "cB2", "B", T + timedelta(days=4), None)
        add_contract(con, "cH1", "H", T + timedelta(days=9), "2027-10-10")
        archive(con, "A", T + timedelta(days=19))
        within = rows_at(con, W)

        assert features_only(within) == features_only(before)
        assert (
            within["A"]["churned_30d"] and not before["A"]["churned_30d"]
        )  # the label does see (t, t + 30 d]
        # The same changes are visible to a later t: the test would catch a feature reading past its as_of.
        assert (
            rows_at(con, W + timedelta(days=5), t=T + timedelta(days=5))["A"]["usage_7d"]
            > changed_later["A"]["usage_7d"]
        )

        # After t + 30 d: B comes back, D renews late, E is archived, B is invoiced.
        add_usage(con, "B", days(W + timedelta(days=1), W + timedelta(days=20)))
        add_contract(con, "cD2", "D", W + timedelta(days=2), None)
        archive(con, "E", W + timedelta(days=5))
        add_invoice(con, "iB1", "B", "FINALIZED", W + timedelta(days=3), "PAID", 700.0)
        after = rows_at(con, W)
        assert after == within

        # A later weekly partition whose window still holds t gives t the same rows (a backfill reproduces).
        assert rows_at(con, W + timedelta(days=7), training_days=8) == within


def _constant_model(p: float) -> bytes:
    """A stored-model bundle whose estimator always answers p (what the scorer unpickles)."""
    from sklearn.dummy import DummyClassifier

    y = np.array([1] * int(round(p * 100)) + [0] * (100 - int(round(p * 100))))
    estimator = DummyClassifier(strategy="prior").fit(np.zeros((100, 1)), y)
    return pickle.dumps({"estimator": estimator, "features": ["usage_7d"], "medians": {"usage_7d": 0.0}})


def _store_model(con, version: str, trained_as_of: datetime, p: float) -> None:
    store(
        con,
        Outcome(
            version, trained_as_of, TRAINED, "fixture", ["usage_7d"], (None, None), 0, 0, 0,
            model=_constant_model(p),
        ),
    )  # fmt: skip


def _build_features(con, as_of: datetime) -> None:
    set_run_variables(con, "daily", as_of)
    for model in load_project(SQL_ROOT, RAW):
        build_model(con, model)


def test_a_day_is_scored_only_by_a_model_trained_at_or_before_it(warehouse):
    tiers = Tiers(high=0.5, medium=0.2)
    with warehouse.connect() as con:
        early, late = datetime(2026, 9, 13), datetime(2026, 9, 27)
        _store_model(con, "m-early", early, 0.1)
        _store_model(con, "m-late", late, 0.6)
        scored = {}
        for as_of in (datetime(2026, 9, 12), early, datetime(2026, 9, 20), late, datetime(2026, 9, 28)):
            _build_features(con, as_of)
            summary = score_partition(con, as_of, tiers)
            scored[as_of] = con.execute(
                f"SELECT DISTINCT model_version, risk_tier FROM {SCORES_TABLE} WHERE as_of = ?", [as_of]
            ).fetchall()
            assert summary.scored == len(
                con.execute(f"SELECT * FROM {SCORES_TABLE} WHERE as_of = ?", [as_of]).fetchall()
            )
        assert scored == {
            datetime(2026, 9, 12): [],  # before any model: nothing
            early: [("m-early", "low")],
            datetime(2026, 9, 20): [("m-early", "low")],  # m-late exists but was trained after this day
            late: [("m-late", "high")],
            datetime(2026, 9, 28): [("m-late", "high")],
        }
        # Only customers active at as_of are scored (F lapsed in September, G is archived).
        customers = {
            c
            for (c,) in con.execute(
                f"SELECT customer_id FROM {SCORES_TABLE} WHERE as_of = ?", [late]
            ).fetchall()
        }
        assert customers == {"A", "B", "C", "D", "E", "H"}


def test_too_little_history_stores_why_and_scores_nothing_without_failing(warehouse):
    # The fixture has 2 months of usage before the first labelled t: far below a 28-day labelled window at W.
    week = "2026-09-06"  # ends 2026-09-13: t <= 08-14, the first active t is 08-15
    result = dg.materialize([churn_model_weekly], partition_key=week, resources={"duckdb": warehouse})
    assert result.success
    (materialization,) = result.asset_materializations_for_node("analytics__churn_model_weekly")
    assert materialization.metadata["status"].value == "insufficient_data"
    assert "RETENTION_CHURN_MIN_LABELLED_DAYS=28" in materialization.metadata["message"].value
    assert "roc_auc" not in materialization.metadata  # no false number in the plots
    with warehouse.connect() as con:
        status, message, model = con.execute(f"SELECT status, message, model FROM {MODELS_TABLE}").fetchone()
        assert (status, model) == ("insufficient_data", None) and "0 labelled days" in message
        _build_features(con, datetime(2026, 9, 20))

    scored = dg.materialize([churn_scores_daily], partition_key="2026-09-19", resources={"duckdb": warehouse})
    assert scored.success
    (materialization,) = scored.asset_materializations_for_node("analytics__churn_scores_daily")
    assert materialization.metadata["scored"].value == 0
    assert "RETENTION_CHURN_MIN_LABELLED_DAYS" in materialization.metadata["why_not_scored"].value
    with warehouse.connect() as con:
        assert con.execute(f"SELECT count(*) FROM {SCORES_TABLE}").fetchone()[0] == 0


def test_too_few_churned_accounts_is_insufficient_data_naming_the_setting(warehouse, monkeypatch):
    monkeypatch.setenv("RETENTION_CHURN_MIN_LABELLED_DAYS", "2")
    monkeypatch.setenv("RETENTION_CHURN_MIN_POSITIVES", "500")
    result = dg.materialize([churn_model_weekly], partition_key="2026-10-25", resources={"duckdb": warehouse})
    assert result.success
    with warehouse.connect() as con:
        status, message, counts = con.execute(
            f"SELECT status, message, [labelled_days, rows_labelled] FROM {MODELS_TABLE}"
        ).fetchone()
    assert status == "insufficient_data" and "RETENTION_CHURN_MIN_POSITIVES=500" in message
    assert counts[0] >= 2 and counts[1] > 0
    with warehouse.connect() as con:
        assert con.execute(f"SELECT metrics IS NULL AND model IS NULL FROM {MODELS_TABLE}").fetchone()[0]
