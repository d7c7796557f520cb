"""analytics.customers on hand-built fixture accounts: identity, the current contract and plan, and its asset."""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
import pytest

from retention_pipeline.definitions import defs
from retention_pipeline.models.assets import build_model, run_tests, set_run_variables
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.source.tables import create_raw_tables
from retention_pipeline.warehouse import DuckDBWarehouse

RAW = {"raw.metronome_customers", "raw.metronome_usage", "raw.metronome_billable_metrics",
       "raw.metronome_contracts", "raw.metronome_invoices", "raw.metronome_balances", "raw.contacts"}  # fmt: skip
T = datetime.fromisoformat
KEY = dg.AssetKey(["analytics", "customers"])

CUSTOMERS = [  # id, name, external_id, created_at, archived_at, custom_fields
    ("A", "Acme", "ext-a", "2025-01-01", None, {}),
    ("B", "Beta | Co", "ext-b", "2025-01-01", None, {}),
    ("C", "Cold", "ext-c", "2025-01-01", "2026-10-01", {}),
    ("D", "Dusk", "ext-d", "2025-01-01", None, {}),
    ("E", "Early", None, "2026-11-25", None, {}),  # created after every as_of: a customer all the same
    ("F", "Fork", "ext-f", "2025-01-01", None, {}),
    ("G", "Ghost", "ext-g", "2025-01-01", None, {"do_not_retarget": "True"}),
]
CONTRACTS = [  # id, customer, starting_at, ending_before, archived_at, name, rate_card_id, custom_fields
    ("cA1", "A", "2025-01-01", "2026-01-01", None, "Starter 2025", "rc_starter", {"plan_tier": "starter"}),
    ("cA2", "A", "2026-01-01", "2027-01-01", None, "Growth 2026", "rc_growth", {"plan_tier": "growth"}),
    (
        "cB",
        "B",
        "2026-06-01",
        None,
        None,
        "Enterprise",
        "rc_ent",
        {"plan": "enterprise"},
    ),  # evergreen, `plan`
    ("cC", "C", "2025-10-01", "2026-10-01", None, "Starter", "rc_starter", {"plan_tier": "starter"}),  # ended
    # D renews at exactly the hourly as_of: the daily as_of (00:00) is still in cD1, the hourly one (10:00) in cD2.
    ("cD1", "D", "2025-11-20", "2026-11-20 10:00", None, "Growth 2025", "rc_growth", {"plan_tier": "growth"}),
    ("cD2", "D", "2026-11-20 10:00", None, None, "Scale", "rc_scale", {"plan_tier": "scale"}),
    ("cF1", "F", "2026-01-01", "2027-01-01", None, "Growth 2026", "rc_growth", {"plan_tier": "growth"}),
    ("cF2", "F", "2026-06-01", None, None, "Add-on", "rc_addon", {}),  # overlaps cF1, started later: current
    ("cF3", "F", "2026-11-01", "2026-12-01", "2026-11-03", "Duplicate draft", "rc_x", {"plan_tier": "x"}),
]


@pytest.fixture
def con(tmp_path):
    with DuckDBWarehouse(path=str(tmp_path / "customers.duckdb")).connect() as con:
        create_raw_tables(con)
        con.executemany(
            "INSERT INTO raw.metronome_customers (id, name, external_id, created_at, archived_at, is_archived, "
            "custom_fields, raw, extracted_at) VALUES (?, ?, ?, ?, ?, ?, ?, '{}', now())",
            [(i, n, x, c, a, a is not None, json.dumps(f)) for i, n, x, c, a, f in CUSTOMERS],
        )
        con.executemany(
            "INSERT INTO raw.metronome_contracts (id, customer_id, starting_at, ending_before, archived_at, name, "
            "rate_card_id, custom_fields, raw, extracted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', now())",
            [(*c[:7], json.dumps(c[7])) for c in CONTRACTS],
        )
        yield con


def build(con, cadence: str, as_of: str) -> None:
    """Every model for one cadence partition, each with its data tests passing (analytics.customers included)."""
    set_run_variables(con, cadence, T(as_of))
    for model in load_project(SQL_ROOT, RAW):
        build_model(con, model)
        failing = [r for r in run_tests(con, model, model.table.split(".")) if not r.passed]
        assert not failing, (model.table, failing)


def customers(con) -> dict[str, dict]:
    result = con.execute("SELECT * FROM analytics.customers")
    names = [d[0] for d in result.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in result.fetchall()}


def test_one_row_per_customer_with_identity_and_current_contract(con):
    build(con, "daily", "2026-11-20")
    rows = customers(con)

    assert set(rows) == {"A", "B", "C", "D", "E", "F", "G"}
    assert {r["as_of"] for r in rows.values()} == {T("2026-11-20")}
    a, b, c, d = rows["A"], rows["B"], rows["C"], rows["D"]
    assert (a["name"], a["external_id"], a["created_at"], a["archived_at"], a["is_archived"]) == (
        "Acme", "ext-a", T("2025-01-01"), None, False)  # fmt: skip
    assert (a["contract_id"], a["contract_name"], a["contract_starting_at"], a["contract_ending_before"]) == (
        "cA2", "Growth 2026", T("2026-01-01"), T("2027-01-01"))  # fmt: skip
    assert (a["contract_seq"], a["rate_card_id"], a["plan"]) == (2, "rc_growth", "growth")
    assert (b["name"], b["contract_id"], b["contract_ending_before"], b["plan"]) == (
        "Beta | Co", "cB", None, "enterprise")  # fmt: skip
    assert (c["is_archived"], c["archived_at"], c["contract_id"], c["plan"]) == (
        True,
        T("2026-10-01"),
        None,
        None,
    )
    assert (d["contract_id"], d["plan"]) == ("cD1", "growth")
    assert (rows["E"]["external_id"], rows["E"]["contract_id"]) == (None, None)
    assert (rows["F"]["contract_id"], rows["F"]["plan"], rows["F"]["rate_card_id"]) == (
        "cF2",
        None,
        "rc_addon",
    )
    assert rows["G"]["do_not_retarget"] and not a["do_not_retarget"]
    assert rows["G"]["contract_id"] is None


def test_current_means_the_newest_features_instant_of_any_cadence(con):
    build(con, "daily", "2026-11-20")
    build(con, "hourly", "2026-11-20 10:00")
    build(con, "daily", "2026-11-19")  # a backfilled older day does not move "current" back

    d = customers(con)["D"]

    assert (d["as_of"], d["contract_id"], d["contract_seq"], d["plan"]) == (
        T("2026-11-20 10:00"),
        "cD2",
        2,
        "scale",
    )


def test_the_contract_matches_what_the_features_report_at_that_instant(con):
    build(con, "daily", "2026-11-20")
    build(con, "hourly", "2026-11-20 10:00")

    mismatches = con.execute(
        "SELECT c.customer_id, c.contract_id, f.contract_id FROM analytics.customers AS c "
        "JOIN analytics.customer_features AS f ON f.customer_id = c.customer_id AND f.as_of = c.as_of "
        "WHERE c.contract_id IS DISTINCT FROM f.contract_id"
    ).fetchall()
    orphans = con.execute(
        "SELECT customer_id FROM analytics.customer_features EXCEPT SELECT customer_id FROM analytics.customers"
    ).fetchall()

    assert mismatches == [] and orphans == []
    assert (
        con.execute(
            "SELECT count(*) FROM analytics.customer_features WHERE as_of = '2026-11-20 10:00'"
        ).fetchone()[0]
        == 6
    )


def test_a_duplicate_customer_fails_the_blocking_key_test(con):
    build(con, "daily", "2026-11-20")
    con.execute("CREATE OR REPLACE TABLE analytics.customers AS SELECT * FROM analytics.customers UNION ALL "
                "SELECT * FROM analytics.customers WHERE customer_id = 'A'")  # fmt: skip
    model = next(m for m in load_project(SQL_ROOT, RAW) if m.table == "analytics.customers")

    results = {r.check_name: r for r in run_tests(con, model, KEY.path)}

    assert not results["unique_customer_id"].passed
    assert results["not_null_customer_id_is_archived"].passed


def test_it_is_an_asset_with_lineage_in_both_cadence_jobs():
    repo = defs.get_repository_def()
    node = repo.asset_graph.get(KEY)
    assert {k.to_user_string() for k in node.parent_keys} == {
        "staging/stg_customers", "staging/stg_contracts", "raw/metronome_contracts",
        "analytics/customer_features_daily", "analytics/customer_features_hourly",
    }  # fmt: skip
    assert node.pools == {"duckdb"} and node.partitions_def is None
    assert {c.name for c in node.check_keys} == {
        "unique_customer_id", "not_null_customer_id_is_archived", "relationships_contract_id"}  # fmt: skip
    for job in ("daily_retention", "hourly_retention"):
        assert KEY in repo.get_job(job).asset_layer.executable_asset_keys, job
