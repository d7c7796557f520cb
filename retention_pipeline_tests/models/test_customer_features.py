"""analytics.customer_features on hand-built fixture accounts, every column checked against a hand computation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from retention_pipeline.models.assets import build_model, run_tests, set_run_variables
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.source.tables import create_raw_tables
from retention_pipeline.warehouse import DuckDBWarehouse

RAW = {"raw.metronome_customers", "raw.metronome_usage", "raw.metronome_billable_metrics",
       "raw.metronome_contracts", "raw.metronome_invoices", "raw.metronome_balances", "raw.contacts"}  # fmt: skip
T = datetime.fromisoformat


def day_usage(customer, metric, day, value):
    start = T(day)
    return (customer, metric, "DAY", start, start + timedelta(days=1), value)


def hour_usage(customer, metric, hour, value):
    start = T(hour)
    return (customer, metric, "HOUR", start, start + timedelta(hours=1), value)


USAGE = [
    # A: prior week [11-06, 11-13) 10/day, last week [11-13, 11-20) 5/day; windows just outside both edges.
    *[day_usage("A", "m_api", f"2026-11-{d:02d}", 10) for d in range(6, 13)],
    *[day_usage("A", "m_api", f"2026-11-{d:02d}", 5) for d in range(13, 20)],
    day_usage("A", "m_api", "2026-11-05", 1000),  # ends exactly at the prior week's start: excluded
    day_usage("A", "m_api", "2026-11-20", 999),  # starts at as_of: excluded
    day_usage("A", "m_tok", "2026-11-15", 12345),  # another metric: not activity
    hour_usage("A", "m_api", "2026-11-13 09:00", 2),
    hour_usage("A", "m_api", "2026-11-13 10:00", 7),
    hour_usage("A", "m_api", "2026-11-20 03:00", 1),
    hour_usage("A", "m_api", "2026-11-20 10:00", 50),
    # B: nothing in the prior week.
    day_usage("B", "m_api", "2026-11-19", 3),
    # D: lapsed; last usage on 09-30 (window ends 10-01 00:00), zero-valued windows later do not count.
    day_usage("D", "m_api", "2026-09-30", 4),
    day_usage("D", "m_api", "2026-10-15", 0),
    # G: exactly 4 active days in the 90 (gaps 4, 3, 3); 08-21 is one day before the window; hour windows never count.
    *[
        day_usage("G", "m_api", day, 2)
        for day in ("2026-08-21", "2026-10-23", "2026-10-27", "2026-10-30", "2026-11-02")
    ],
    hour_usage("G", "m_api", "2026-11-10 08:00", 5),
    # H: 5 active days, gaps 1, 2, 3, 4 (median 2.5); active on another metric only on 11-19 (not activity).
    *[
        day_usage("H", "m_api", day, 1)
        for day in ("2026-11-08", "2026-11-09", "2026-11-11", "2026-11-14", "2026-11-18")
    ],
    day_usage("H", "m_tok", "2026-11-19", 40),
]
CUSTOMERS = [  # id, created_at, archived_at, custom_fields
    ("A", "2025-01-01", None, {}),
    ("B", "2025-01-01", None, {"do_not_retarget": "TRUE"}),
    ("C", "2025-01-01", "2026-11-10", {}),
    ("D", "2025-01-01", None, {}),
    ("E", "2026-11-25", None, {}),  # created after as_of: no row
    ("F", "2025-01-01", None, {}),
    ("G", "2025-01-01", None, {}),
    ("H", "2025-01-01", None, {}),
]
CONTRACTS = [  # id, customer, starting_at, ending_before
    ("cA", "A", "2026-01-01", "2026-11-27"),
    ("cB1", "B", "2025-11-01", "2026-11-01"),
    ("cB2", "B", "2026-11-01", None),  # renewal, evergreen
    ("cD", "D", "2026-11-30", "2027-11-30"),  # future contract: not covering
    ("cF1", "F", "2025-11-10", "2026-11-10"),
    ("cF2", "F", "2026-11-10", "2027-11-10"),  # renewed 10 days before as_of
]
INVOICES = [  # id, customer, status, issued_at, external_status, total
    ("iA0", "A", "FINALIZED", "2026-07-01", "PAID", 3000),  # paid, before the 90 days
    (
        "iA3",
        "A",
        "FINALIZED",
        "2026-08-22",
        None,
        100,
    ),  # no billing provider: paid; exactly 90 days before as_of
    ("iA1", "A", "FINALIZED", "2026-10-01", "PAYMENT_FAILED", 500),
    ("iA2", "A", "FINALIZED", "2026-11-01", "PAID", 1200),
    ("iB1", "B", "FINALIZED", "2026-11-01", "PAYMENT_FAILED", 700),
    ("iB2", "B", "DRAFT", "2026-11-19", None, 50),
    ("iC1", "C", "VOID", "2026-11-01", "UNCOLLECTIBLE", 100),
    ("iD1", "D", "FINALIZED", "2026-11-15", "PAID", 400),  # failed, then paid
    ("iD2", "D", "FINALIZED", "2026-11-21", "PAYMENT_FAILED", 999),  # issued after as_of
]
SEGMENT = {
    "id": "segA",
    "amount": 10000,
    "starting_at": "2026-11-01T00:00:00Z",
    "ending_before": "2026-12-01T00:00:00Z",
}
LEDGER = [
    {"type": "PREPAID_COMMIT_SEGMENT_START", "amount": 10000, "timestamp": "2026-11-01T00:00:00Z", "segment_id": "segA"},
    {"type": "PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", "amount": -1000, "timestamp": "2026-11-14T00:00:00Z",
     "segment_id": "segA"},
    {"type": "PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", "amount": -400, "timestamp": "2026-11-18T12:00:00Z",
     "segment_id": "segA"},
    {"type": "PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", "amount": -700, "timestamp": "2026-11-20T00:00:00Z",
     "segment_id": "segA"},
]  # fmt: skip


@pytest.fixture
def con(tmp_path):
    with DuckDBWarehouse(path=str(tmp_path / "features.duckdb")).connect() as con:
        create_raw_tables(con)
        con.executemany(
            "INSERT INTO raw.metronome_customers (id, created_at, archived_at, is_archived, custom_fields, raw, "
            "extracted_at) VALUES (?, ?, ?, ? , ?, '{}', now())",
            [(i, c, a, a is not None, json.dumps(f)) for i, c, a, f in CUSTOMERS],
        )
        con.execute(
            "INSERT INTO raw.metronome_billable_metrics (id, name, raw, extracted_at) VALUES "
            "('m_api', 'api_calls', '{}', now()), ('m_tok', 'tokens', '{}', now())"
        )
        con.executemany(
            "INSERT INTO raw.metronome_usage VALUES (?, ?, 'x', ?, ?, ?, ?, now())",
            [(c, m, w, s, e, v) for c, m, w, s, e, v in USAGE],
        )
        con.executemany(
            "INSERT INTO raw.metronome_contracts (id, customer_id, starting_at, ending_before, raw, extracted_at) "
            "VALUES (?, ?, ?, ?, '{}', now())",
            CONTRACTS,
        )
        con.executemany(
            "INSERT INTO raw.metronome_invoices (id, customer_id, status, issued_at, external_status, total, raw, "
            "extracted_at) VALUES (?, ?, ?, ?, ?, ?, '{}', now())",
            INVOICES,
        )
        con.execute(
            "INSERT INTO raw.metronome_balances (id, customer_id, contract_id, type, schedule_items, ledger, raw, "
            "extracted_at) VALUES ('commitA', 'A', 'cA', 'PREPAID', ?, ?, '{}', now())",
            [json.dumps([SEGMENT]), json.dumps(LEDGER)],
        )
        yield con


def features(con, cadence: str, as_of: str) -> dict[str, dict]:
    set_run_variables(con, cadence, T(as_of))
    for model in load_project(SQL_ROOT, RAW):
        build_model(con, model)
        failing = [r for r in run_tests(con, model, model.table.split(".")) if not r.passed]
        assert not failing, (model.table, failing)
    result = con.execute(
        "SELECT * FROM analytics.customer_features WHERE cadence = ? AND as_of = ?", [cadence, T(as_of)]
    )
    names = [d[0] for d in result.description]
    return {row[0]: dict(zip(names, row, strict=True)) for row in result.fetchall()}


def test_daily_features_match_hand_computed_values(con):
    rows = features(con, "daily", "2026-11-20")
    assert set(rows) == {"A", "B", "C", "D", "F", "G", "H"}
    a, b, c, d = rows["A"], rows["B"], rows["C"], rows["D"]

    assert (a["usage_7d"], a["usage_prior_7d"], a["wow_usage_change_pct"]) == (35, 70, -50)
    assert (a["last_usage_at"], a["days_since_last_usage"]) == (T("2026-11-20"), 0)
    assert (a["contract_id"], a["contract_end"], a["days_to_renewal"]) == ("cA", T("2026-11-27"), 7)
    assert (a["credit_balance"], a["credit_burn_daily"]) == (8600, 200)
    assert (a["days_until_credits_depleted"], a["credit_used_pct"]) == (43, 14)
    assert not a["has_failed_payment"] and not a["plan_changed_30d"] and not a["is_archived"]

    assert (b["usage_7d"], b["usage_prior_7d"]) == (3, 0)
    assert b["wow_usage_change_pct"] is None
    assert (b["contract_id"], b["contract_end"], b["days_to_renewal"]) == ("cB2", None, None)  # evergreen
    assert (
        b["has_failed_payment"] and b["plan_changed_30d"] and b["renewed_14d"] is False
    )  # started 19 days ago
    assert b["do_not_retarget"] and not a["do_not_retarget"]  # custom field "TRUE", case-insensitive

    assert (c["usage_7d"], c["usage_prior_7d"], c["wow_usage_change_pct"]) == (0, 0, None)
    assert (c["last_usage_at"], c["days_since_last_usage"]) == (None, None)  # never used
    assert (c["credit_balance"], c["credit_burn_daily"], c["days_until_credits_depleted"], c["credit_used_pct"]) == (
        0, 0, None, None)  # fmt: skip
    assert c["is_archived"] and not c["has_failed_payment"] and c["contract_id"] is None

    assert (d["last_usage_at"], d["days_since_last_usage"]) == (T("2026-10-01"), 50)
    assert not d["has_failed_payment"]  # the later PAYMENT_FAILED invoice was issued after as_of
    assert d["contract_id"] is None

    f = rows["F"]
    assert (f["contract_id"], f["days_to_renewal"], f["plan_changed_30d"], f["renewed_14d"]) == (
        "cF2",
        355,
        True,
        True,
    )


def test_value_features_match_hand_computed_values(con):
    rows = features(con, "daily", "2026-11-20")
    value = {
        k: (r["revenue_to_date"], r["revenue_90d"], r["contract_value_per_year"]) for k, r in rows.items()
    }
    assert value["A"] == (3000 + 100 + 1200, 100 + 1200, pytest.approx(10000 * 365 / 30))  # segA: 30 days, cA
    assert value["B"] == (0, 0, None)  # failed and draft invoices are not revenue; no commit
    assert value["C"] == (0, 0, None)  # void
    assert value["D"] == (400, 400, None)  # the PAYMENT_FAILED invoice of 11-21 is after as_of
    assert rows["A"]["annual_value"] == pytest.approx(10000 * 365 / 30)  # the contract states it
    assert rows["D"]["annual_value"] == pytest.approx(400 * 365 / 90)  # else trailing revenue, annualised
    # Deciles of annual_value over 7 customers: five at 0 share ceil(10 * 5/7) = 8, D 9/10 → ceil(8.57) = 9, A 10.
    deciles = {k: r["value_decile"] for k, r in rows.items()}
    assert deciles == {"A": 10, "D": 9, "B": 8, "C": 8, "F": 8, "G": 8, "H": 8}


def test_rhythm_features_match_hand_computed_values(con):
    rows = features(con, "daily", "2026-11-20")

    def rhythm(k):
        r = rows[k]
        return (r["active_days_90d"], r["last_active_day"], r["typical_gap_days"], r["expected_next_active_day"],
                r["days_overdue"])  # fmt: skip

    d = datetime.fromisoformat
    # A: every day 11-05 … 11-19 (the 11-20 window starts at as_of; hour windows do not count); due 11-20: 0 overdue.
    assert rhythm("A") == (15, d("2026-11-19").date(), 1.0, d("2026-11-20").date(), 0)
    # G: 4 active days is enough: gaps 4, 3, 3 → 3; 11-02 + 3 = 11-05, 15 days before as_of's date.
    assert rhythm("G") == (4, d("2026-11-02").date(), 3.0, d("2026-11-05").date(), 15)
    # H: gaps 1, 2, 3, 4 → median 2.5, rounded up: due 11-21, one day after as_of (negative = not yet due).
    assert rhythm("H") == (5, d("2026-11-18").date(), 2.5, d("2026-11-21").date(), -1)
    # Too little history for a rhythm: one active day (B, D), none (C, F).
    assert rhythm("B") == (1, d("2026-11-19").date(), None, None, None)
    assert rhythm("D") == (1, d("2026-09-30").date(), None, None, None)
    assert rhythm("C") == (0, None, None, None, None)


def test_value_and_rhythm_use_only_data_before_as_of(con):
    before = features(con, "daily", "2026-11-20")
    con.execute(
        "INSERT INTO raw.metronome_invoices (id, customer_id, status, issued_at, external_status, total, raw, "
        "extracted_at) VALUES ('late', 'B', 'FINALIZED', '2026-11-20', 'PAID', 5000, '{}', now())"
    )
    con.executemany(
        "INSERT INTO raw.metronome_usage VALUES (?, ?, 'x', ?, ?, ?, ?, now())",
        [day_usage("G", "m_api", "2026-11-20", 9), day_usage("B", "m_api", "2026-11-21", 9)],
    )
    after = features(con, "daily", "2026-11-20")
    assert after == before  # an invoice issued at as_of and usage from as_of on change nothing
    later = features(con, "daily", "2026-11-21")
    assert later["B"]["revenue_to_date"] == 5000 and later["G"]["last_active_day"] == d_("2026-11-20")


def d_(value: str):
    return datetime.fromisoformat(value).date()


def test_hourly_features_use_hour_windows_at_the_range_edges(con):
    a = features(con, "hourly", "2026-11-20 10:00")["A"]
    assert a["usage_7d"] == 30 + 7 + 1  # days 14..19, hour 11-13 10:00, hour 11-20 03:00
    assert a["usage_prior_7d"] == 60 + 2  # days 07..12, hour 11-13 09:00
    assert a["wow_usage_change_pct"] == pytest.approx(100 * (38 - 62) / 62)
    assert (a["last_usage_at"], a["days_since_last_usage"]) == (T("2026-11-20 04:00"), 0)
    assert (a["credit_balance"], a["credit_burn_daily"]) == (7900, 300)
    assert a["days_until_credits_depleted"] == pytest.approx(7900 / 300)
    assert a["credit_used_pct"] == 21


def test_partitions_are_replaced_not_duplicated_and_latest_view_picks_the_newest(con):
    features(con, "daily", "2026-11-19")
    features(con, "daily", "2026-11-20")
    features(con, "daily", "2026-11-20")
    counts = con.execute(
        "SELECT as_of, count(*) FROM analytics.customer_features GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert counts == [(T("2026-11-19"), 7), (T("2026-11-20"), 7)]
    latest = con.execute("SELECT DISTINCT as_of FROM analytics.customer_features_latest").fetchall()
    assert latest == [(T("2026-11-20"),)]


def test_lifecycle_events_are_derived_from_contract_and_segment_ends(con):
    features(con, "daily", "2026-11-20")
    rows = con.execute(
        "SELECT event_type, offset_duration, source_id, fires_at FROM analytics.lifecycle_events "
        "WHERE customer_id IN ('A', 'B') ORDER BY ALL"
    ).fetchall()
    assert rows == [
        ("commit.segment.end", "-P7D", "segA", T("2026-11-24")),
        ("commit.segment.end", "P0D", "segA", T("2026-12-01")),
        ("contract.end", "-P30D", "cA", T("2026-10-28")),
        ("contract.end", "-P30D", "cB1", T("2026-10-02")),
        ("contract.end", "-P7D", "cA", T("2026-11-20")),
        ("contract.end", "-P7D", "cB1", T("2026-10-25")),
        ("contract.end", "P0D", "cA", T("2026-11-27")),
        ("contract.end", "P0D", "cB1", T("2026-11-01")),
    ]  # cB2 is evergreen: no end, no events
