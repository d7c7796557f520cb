"""Measurement tables on hand-built fixtures, against hand-computed values."""

import math
from datetime import date, datetime, timedelta

import pytest

from retention_pipeline.destinations.sync import ensure_tables as ensure_sync_tables
from retention_pipeline.models.assets import build_model, set_run_variables
from retention_pipeline.models.churn.dataset import label_points
from retention_pipeline.models.project import SQL_ROOT, load_project
from retention_pipeline.segments.engine import ensure_tables as ensure_segment_tables
from retention_pipeline.segments.fixtures import RAW_TABLES, prepare
from retention_pipeline.warehouse import DuckDBWarehouse

T = datetime.fromisoformat


@pytest.fixture
def con(tmp_path):
    with DuckDBWarehouse(path=str(tmp_path / "m.duckdb")).connect() as con:
        prepare(con, [])
        ensure_segment_tables(con)
        ensure_sync_tables(con)
        con.execute("INSERT INTO raw.metronome_billable_metrics (id, name, raw, extracted_at) "
                    "VALUES ('m', 'api_calls', '{}', now())")  # fmt: skip
        yield con


def build(con):
    # The fixtures' segments, defined with the cadence their partitions were written under.
    con.execute(
        """INSERT INTO segments.definitions (segment, cadence, purpose)
        SELECT DISTINCT segment, cadence, 'target' FROM (
            SELECT segment, cadence FROM segments.partitions UNION SELECT segment, cadence FROM segments.changes)
        WHERE segment NOT IN (SELECT segment FROM segments.definitions)"""
    )
    set_run_variables(con, "daily", T("2026-11-21"))
    upstream = load_project(SQL_ROOT, RAW_TABLES)
    measurement = load_project(
        SQL_ROOT,
        RAW_TABLES | {m.table for m in upstream} | {"segments.partitions", "segments.members", "segments.changes",
                                                     "segments.definitions",
                                                     "sync.coverage", "sync.ledger_items", "sync.runs"},
        folders={"measurement"},
    )  # fmt: skip
    for model in [*upstream, *measurement]:
        build_model(con, model)


def entered(con, segment, customer, as_of, holdout=False, exited=None):
    con.execute("INSERT INTO segments.changes VALUES (?, 'daily', 'k', ?, NULL, ?, 'entered', NULL, NULL)",
                [segment, T(as_of), customer])  # fmt: skip
    con.execute("INSERT INTO segments.members VALUES (?, 'daily', 'k', ?, ?, NULL, NULL, ?, NULL)",
                [segment, T(as_of), customer, holdout])  # fmt: skip
    if exited:
        con.execute("INSERT INTO segments.changes VALUES (?, 'daily', 'k', ?, NULL, ?, 'exited', NULL, NULL)",
                    [segment, T(exited), customer])  # fmt: skip


def invoice(con, invoice_id, customer, issued, total, status="FINALIZED"):
    con.execute("INSERT INTO raw.metronome_invoices (id, customer_id, status, issued_at, total, raw, extracted_at) "
                "VALUES (?, ?, ?, ?, ?, '{}', now())", [invoice_id, customer, status, T(issued), total])  # fmt: skip


def test_added_revenue_counts_invoices_during_stays_plus_the_attribution_window_once(con):
    entered(con, "s", "A", "2026-11-01", exited="2026-11-10")
    entered(con, "s", "A", "2026-11-15")  # re-entered
    entered(con, "s", "B", "2026-11-01", holdout=True)
    invoice(con, "before", "A", "2026-10-31", 999)  # before entry
    invoice(con, "in_stay", "A", "2026-11-05", 100)
    invoice(con, "after_exit", "A", "2026-11-12", 50)  # within exit + 7 days
    invoice(con, "both", "A", "2026-11-16", 200)  # in the attribution window and the second stay: once
    invoice(con, "draft", "A", "2026-11-14", 999, status="DRAFT")
    invoice(con, "late", "A", "2026-11-17 00:00:01", 999)  # ≥ exit + 7 days … but inside the second stay
    invoice(con, "holdout", "B", "2026-11-03", 300)
    build(con)
    rows = con.execute("SELECT segment, day, cohort, accounts, invoices, revenue FROM segments.added_revenue "
                       "ORDER BY day, cohort").fetchall()  # fmt: skip
    assert rows == [
        ("s", date(2026, 11, 3), "holdout", 1, 1, 300),
        ("s", date(2026, 11, 5), "treated", 1, 1, 100),
        ("s", date(2026, 11, 12), "treated", 1, 1, 50),
        ("s", date(2026, 11, 16), "treated", 1, 1, 200),
        ("s", date(2026, 11, 17), "treated", 1, 1, 999),
    ]


def usage(con, customer, daily: dict):
    """daily: {first_day: value} ranges — each value holds until the next key, through 2026-11-20."""
    starts = sorted(daily)
    day = T("2026-10-20")
    while day <= T("2026-11-20"):
        value = daily[max(k for k in starts if T(k) <= day)] if any(T(k) <= day for k in starts) else 0
        con.execute("INSERT INTO raw.metronome_usage VALUES (?, 'm', 'api_calls', 'DAY', ?, ?, ?, now())",
                    [customer, day, day + timedelta(days=1), value])  # fmt: skip
        day += timedelta(days=1)


def test_holdout_lift_compares_treated_and_holdout_outcomes_with_an_interval(con):
    for customer, holdout in [("T1", 0), ("T2", 0), ("T3", 0), ("T4", 0), ("H1", 1), ("H2", 1)]:
        entered(con, "drop", customer, "2026-11-01", holdout=bool(holdout))
    usage(con, "T1", {"2026-10-20": 10})  # flat: not active again
    usage(con, "T2", {"2026-10-20": 10, "2026-11-05": 20})  # rises: success
    usage(con, "T3", {})  # never used: 0 > 0 is false
    usage(con, "T4", {"2026-10-20": 10, "2026-11-02": 5})  # falls
    usage(con, "H1", {"2026-10-20": 10, "2026-11-10": 11})  # rises within 14 days: success
    usage(con, "H2", {"2026-10-20": 10})
    entered(con, "drop", "LATE", "2026-11-10")  # window not elapsed by 2026-11-20: not counted
    entered(con, "renewal_x", "R1", "2026-11-01")
    entered(con, "renewal_x", "R2", "2026-11-01", holdout=True)
    con.execute(
        "INSERT INTO raw.metronome_contracts (id, customer_id, starting_at, ending_before, raw, extracted_at) "
        "VALUES ('k1', 'R1', '2025-11-05', '2026-11-05', '{}', now()), "
        "('k2', 'R1', '2026-11-05', NULL, '{}', now()), ('k3', 'R2', '2025-11-05', '2026-11-05', '{}', now())"
    )
    build(con)
    lift = {(r[0], r[1]): r[2:] for r in con.execute(
        "SELECT segment, outcome, treated_n, treated_rate, holdout_n, holdout_rate, lift, ci_low, ci_high "
        "FROM segments.holdout_lift").fetchall()}  # fmt: skip
    treated_n, treated_rate, holdout_n, holdout_rate, diff, low, high = lift[("drop", "active_again")]
    assert (treated_n, treated_rate, holdout_n, holdout_rate, diff) == (4, 0.25, 2, 0.5, -0.25)
    margin = 1.96 * math.sqrt(0.25 * 0.75 / 4 + 0.5 * 0.5 / 2)
    assert low == pytest.approx(-0.25 - margin) and high == pytest.approx(-0.25 + margin)
    assert lift[("renewal_x", "renewed")][:5] == (1, 1.0, 1, 0.0, 1.0)
    assert ("drop", "renewed") not in lift


def test_a_suppress_segment_is_measured_on_its_declared_cadence_only(con):
    """Suppress segments are also evaluated by the daily run (send-time freshness); that series is not counted."""
    con.execute(
        "INSERT INTO segments.definitions (segment, cadence, purpose) VALUES ('s', 'hourly', 'suppress')"
    )
    for cadence, key, as_of, accounts, entries in [
        ("hourly", "2026-11-20-22:00", "2026-11-20 23:00", 4, 4),
        ("hourly", "2026-11-20-23:00", "2026-11-21 00:00", 5, 1),
        ("daily", "2026-11-20", "2026-11-21 00:00", 9, 9),
    ]:
        con.execute("INSERT INTO segments.partitions VALUES ('s', ?, ?, ?, ?, ?, 0, ?, 0, NULL, NULL, NULL, 'ok', "
                    "NULL, now())", [cadence, key, T(as_of), accounts, accounts, entries])  # fmt: skip
    build(con)
    assert con.execute(
        "SELECT day, cadence, size_accounts, entries FROM segments.segment_daily_stats"
    ).fetchall() == [(date(2026, 11, 20), "hourly", 5, 5)]


def test_segment_daily_stats_sums_flows_and_takes_the_days_last_size(con):
    for as_of, accounts, entries, exits in [
        ("2026-11-20 01:00", 5, 5, 0),
        ("2026-11-20 02:00", 6, 2, 1),
        ("2026-11-21 00:00", 7, 1, 0),
        ("2026-11-21 01:00", 7, 0, 0),
    ]:
        con.execute("INSERT INTO segments.partitions VALUES ('h', 'hourly', 'k', ?, ?, ?, 1, ?, ?, NULL, NULL, NULL, "
                    "'ok', NULL, now())", [T(as_of), accounts, accounts * 2, entries, exits])  # fmt: skip
    con.execute(
        "INSERT INTO sync.coverage VALUES ('h', 'meta', '2026-11-21 00:00', 10, 9, 9, NULL, 90, now())"
    )
    con.execute(
        "INSERT INTO sync.runs VALUES ('r1', 'hourly', '2026-11-20-23:00', false, now(), now(), 'done')"
    )
    for i in range(9):
        con.execute("INSERT INTO sync.ledger_items VALUES ('r1', 'q', 'h', 'meta', ?, 'add', 'x', 'acked', NULL, now(), 't')",
                    [f"p{i}"])  # fmt: skip
    con.execute(
        "INSERT INTO sync.ledger_items VALUES ('r1', 'q', 'h', 'meta', 'bad', 'add', 'x', 'rejected', 'no', now(), 't')"
    )
    build(con)
    rows = con.execute("SELECT day, size_accounts, entries, exits, holdout_accounts FROM segments.segment_daily_stats "
                       "ORDER BY day").fetchall()  # fmt: skip
    assert rows == [(date(2026, 11, 20), 7, 8, 1, 1), (date(2026, 11, 21), 7, 0, 0, 1)]
    # Per destination: only meta synced, only on the 20th (no row for a destination or a day without a sync).
    rows = con.execute("SELECT day, segment, cadence, destination, people, identifiable, acknowledged, sent, matched, "
                       "coverage_pct, match_rate_pct FROM segments.segment_destination_daily").fetchall()  # fmt: skip
    assert rows == [(date(2026, 11, 20), "h", "hourly", "meta", 10, 9, 9, 9, None, 90.0, None)]


def test_segment_destination_daily_reports_any_destination_without_a_sql_change(con):
    """A destination the SQL has never heard of gets its rows, and its platform-reported matched size."""
    con.execute("INSERT INTO segments.partitions VALUES ('d', 'daily', '2026-11-20', '2026-11-21 00:00', 12, 12, 0, "
                "12, 0, NULL, NULL, NULL, 'ok', NULL, now())")  # fmt: skip
    for destination, people, identified, acknowledged, matched, computed_at in [
        ("acme", 12, 10, 10, 8, "2026-11-21 00:05"),
        ("acme", 12, 11, 11, 9, "2026-11-21 00:10"),  # a re-run of the same partition: the newest counts
        ("meta", 12, 12, 12, None, "2026-11-21 00:05"),
    ]:
        con.execute("INSERT INTO sync.coverage VALUES ('d', ?, '2026-11-21 00:00', ?, ?, ?, ?, NULL, ?)",
                    [destination, people, identified, acknowledged, matched, T(computed_at)])  # fmt: skip
    con.execute("INSERT INTO sync.runs VALUES ('r1', 'daily', '2026-11-20', false, now(), now(), 'done')")
    for i, status in enumerate(["acked"] * 3 + ["rejected"]):
        con.execute("INSERT INTO sync.ledger_items VALUES ('r1', 'q', 'd', 'acme', ?, 'add', 'x', ?, NULL, now(), 't')",
                    [f"p{i}", status])  # fmt: skip
    build(con)
    rows = con.execute("SELECT day, segment, cadence, destination, people, identifiable, acknowledged, sent, matched, "
                       "coverage_pct, match_rate_pct FROM segments.segment_destination_daily "
                       "ORDER BY destination").fetchall()  # fmt: skip
    assert rows == [
        (date(2026, 11, 20), "d", "daily", "acme", 12, 11, 11, 3, 9, pytest.approx(100 * 11 / 12),
         pytest.approx(100 * 9 / 11)),
        (date(2026, 11, 20), "d", "daily", "meta", 12, 12, 12, 0, None, 100.0, None),
    ]  # fmt: skip
    # The segment's own row is unaffected by how many destinations it has.
    assert con.execute(
        "SELECT count(*) FROM segments.segment_daily_stats WHERE segment = 'd'"
    ).fetchone() == (1,)


def _active(con, customer, first: str, last: str):
    """Activity-metric usage of 1 on every day from first through last."""
    con.execute(
        "INSERT INTO raw.metronome_usage SELECT ?, 'm', 'api_calls', 'DAY', d, d + INTERVAL 1 DAY, 1, now() "
        "FROM range(?::TIMESTAMP, ?::TIMESTAMP + INTERVAL 1 DAY, INTERVAL 1 DAY) AS t(d)",
        [customer, T(first), T(last)],
    )


def _partition(con, segment, as_of):
    con.execute(
        "INSERT INTO segments.partitions (segment, cadence, partition_key, as_of, accounts, people, "
        "holdout_accounts, entries, exits, guard_status, computed_at) VALUES (?, 'daily', 'k', ?, 0, 0, 0, 0, 0, "
        "'ok', now())",
        [segment, T(as_of)],
    )


def test_segment_comparison_uses_one_window_one_churn_outcome_and_wilson_intervals(con):
    _partition(con, "rule", "2026-09-25")
    _partition(con, "model", "2026-10-01")  # started later: the comparison starts here for both
    entered(con, "rule", "R_before", "2026-09-28")  # before the common window
    for customer, holdout, last_active in [("R1", False, "2026-10-10"), ("R2", False, "2026-11-20"),
                                           ("R3", True, "2026-10-12"), ("R4", True, "2026-11-20")]:  # fmt: skip
        entered(con, "rule", customer, "2026-10-05", holdout=holdout)
        _active(con, customer, "2026-09-01", last_active)  # lapsed: nothing in [10-21, 11-04)
    entered(con, "rule", "R_late", "2026-11-01")  # 30 days not elapsed by the data's end (11-21)
    _active(con, "R_late", "2026-09-01", "2026-11-20")
    for customer, holdout in [("M1", False), ("M2", True), ("M3", True)]:
        entered(con, "model", customer, "2026-10-05", holdout=holdout)
        _active(con, customer, "2026-09-01", "2026-11-20")  # all active: churn comes from the account
    con.execute(
        "INSERT INTO raw.metronome_customers (id, created_at, archived_at, is_archived, custom_fields, raw, "
        "extracted_at) VALUES ('M1', '2025-01-01', '2026-10-20', true, '{}', '{}', now())"
    )  # archived within 30 days
    con.execute(
        "INSERT INTO raw.metronome_contracts (id, customer_id, starting_at, ending_before, raw, extracted_at) "
        "VALUES ('c2', 'M2', '2025-10-25', '2026-10-25', '{}', now()), "  # ends, no successor: churned
        "('c3', 'M3', '2025-10-25', '2026-10-25', '{}', now()), ('c3b', 'M3', '2026-10-25', NULL, '{}', now())"
    )  # M3 renewed
    build(con)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT segment, window_start, entries, treated_n, treated_churn_rate, holdout_n, holdout_churn_rate, "
        "churn_prevented FROM segments.segment_comparison").fetchall()}  # fmt: skip
    assert rows["rule"] == (date(2026, 10, 1), 4, 2, 0.5, 2, 0.5, 0.0)
    assert rows["model"] == (date(2026, 10, 1), 3, 1, 1.0, 2, 0.5, -0.5)  # treated churned more
    low, high = con.execute(
        "SELECT holdout_ci_low, holdout_ci_high FROM segments.segment_comparison WHERE segment = 'rule'"
    ).fetchone()
    z, n, p = 1.96, 2, 0.5  # Wilson score interval, by hand
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    assert (low, high) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert 0 <= low < p < high <= 1

    # The comparison's outcome is the churn label's (lapsed, archived, contract ended unrenewed), restated in the
    # measurement SQL because a model cannot fill the label's temp table: the two must agree on every entry.
    label_points(
        con,
        "SELECT DISTINCT customer_id, as_of AS t FROM segments.changes WHERE change = 'entered' "
        "AND segment IN ('rule', 'model') AND as_of >= '2026-10-01' AND as_of <= '2026-10-22'",
        T("2026-11-21"),
    )
    by_label = dict(
        con.execute(
            "SELECT c.segment, avg(CAST(l.lapsed_30d OR l.archived_30d OR l.contract_ended_30d AS INTEGER)) "
            "FROM segments.changes AS c JOIN churn_labels AS l ON l.customer_id = c.customer_id AND l.t = c.as_of "
            "WHERE c.change = 'entered' GROUP BY c.segment"
        ).fetchall()
    )
    compared = dict(
        con.execute(
            "SELECT segment, (treated_churn_rate * treated_n + holdout_churn_rate * holdout_n) / entries "
            "FROM segments.segment_comparison WHERE segment IN ('rule', 'model')"
        ).fetchall()
    )
    assert by_label == pytest.approx(compared) and set(by_label) == {"rule", "model"}
