"""What the pipeline is measured against: DuckDB's own read_json of the pages, one DuckDB aggregate over the usage
table, and a straightforward pandas implementation of analytics.customer_features (checked to give its numbers)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------- ingestion

_PAGE_COLUMNS = (
    "{data: 'STRUCT(customer_id VARCHAR, billable_metric_id VARCHAR, billable_metric_name VARCHAR, "
    "start_timestamp VARCHAR, end_timestamp VARCHAR, value DOUBLE)[]', next_page: 'VARCHAR'}"
)


def read_json_ingest(con, files: list[Path], window_size: str = "DAY") -> int:
    """All pages in one statement: DuckDB parses the files itself and writes raw.metronome_usage's columns."""
    return con.execute(
        f"""INSERT INTO raw.metronome_usage
        SELECT r.customer_id, r.billable_metric_id, r.billable_metric_name, ?, utc_ts(r.start_timestamp),
               utc_ts(r.end_timestamp), r.value, now()::TIMESTAMP
        FROM (SELECT unnest(data) AS r FROM read_json(?, columns = {_PAGE_COLUMNS}, format = 'auto'))""",
        [window_size, [str(f) for f in files]],
    ).fetchall()[0][0]


def usage_fingerprint(con) -> tuple[int, float, str]:
    """Rows, total value and an order-independent hash of the keys: equal tables give equal fingerprints."""
    rows, total, keys = con.execute(
        "SELECT count(*), round(sum(value), 3), "
        "CAST(bit_xor(hash(customer_id, billable_metric_id, window_size, start_timestamp, end_timestamp)) AS VARCHAR) "
        "FROM raw.metronome_usage"
    ).fetchall()[0]
    return rows, total, keys


# --------------------------------------------------------------------------------------------- aggregate


def usage_aggregate(con, as_of: datetime, metric_name: str = "api_calls") -> int:
    """The usage part of the features in one GROUP BY over the same usage table: the floor for any feature SQL."""
    return con.execute(
        """CREATE OR REPLACE TABLE main.bench_usage_aggregate AS
        SELECT customer_id,
            sum(value) FILTER (WHERE billable_metric_name = $metric AND start_timestamp >= $as_of - INTERVAL 7 DAY
                               AND end_timestamp <= $as_of) AS usage_7d,
            sum(value) FILTER (WHERE billable_metric_name = $metric AND start_timestamp >= $as_of - INTERVAL 14 DAY
                               AND end_timestamp <= $as_of - INTERVAL 7 DAY) AS usage_prior_7d,
            max(end_timestamp) FILTER (WHERE value > 0 AND end_timestamp <= $as_of) AS last_usage_at
        FROM raw.metronome_usage
        GROUP BY customer_id""",
        {"as_of": as_of.replace(tzinfo=None), "metric": metric_name},
    ).fetchall()[0][0]


# ------------------------------------------------------------------------------------------------ pandas

RAW_QUERIES = {
    "customers": "SELECT id, created_at, archived_at, CAST(custom_fields AS VARCHAR) AS custom_fields "
    "FROM raw.metronome_customers",
    "metrics": "SELECT id, name, archived_at FROM raw.metronome_billable_metrics",
    "usage": "SELECT customer_id, billable_metric_id, window_size, start_timestamp, end_timestamp, value "
    "FROM raw.metronome_usage",
    "contracts": "SELECT id, customer_id, starting_at, ending_before, archived_at FROM raw.metronome_contracts",
    "invoices": "SELECT id, customer_id, status, issued_at, external_status, total FROM raw.metronome_invoices",
    "balances": "SELECT id, customer_id, contract_id, type, CAST(schedule_items AS VARCHAR) AS schedule_items, "
    "CAST(ledger AS VARCHAR) AS ledger, archived_at FROM raw.metronome_balances",
}
_FAILED = ("PAYMENT_FAILED", "UNCOLLECTIBLE")


def fetch_raw(con) -> dict[str, pd.DataFrame]:
    """The raw tables as DataFrames: what a pandas script starts from."""
    return {name: con.execute(sql).df() for name, sql in RAW_QUERIES.items()}


def _utc_naive(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True).dt.tz_convert(None)


def _json_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def pandas_features(
    raw: dict[str, pd.DataFrame], as_of: datetime, cadence: str = "daily", activity_metric: str | None = None
) -> pd.DataFrame:
    """analytics.customer_features for one as_of, written the way an analyst would in pandas."""
    as_of = pd.Timestamp(as_of.replace(tzinfo=None))
    day = pd.Timedelta(days=1)

    customers = raw["customers"]
    customers = customers[customers["created_at"].isna() | (customers["created_at"] < as_of)]
    fields = customers["custom_fields"].map(lambda text: json.loads(text) if isinstance(text, str) else {})
    out = pd.DataFrame(
        {
            "customer_id": customers["id"].to_numpy(),
            "is_archived": (customers["archived_at"] <= as_of).fillna(False).to_numpy(dtype=bool),
            "do_not_retarget": [
                (_json_text((f or {}).get("do_not_retarget")) or "").lower() == "true" for f in fields
            ],
        }
    )

    # Activity: the configured metric, else the only live one, else api_calls.
    metrics = raw["metrics"]
    live = metrics[metrics["archived_at"].isna()]
    wanted = activity_metric or (live["name"].iloc[0] if len(live) == 1 else "api_calls")
    activity_ids = set(live.loc[(live["name"] == wanted) | (live["id"] == wanted), "id"])
    usage = raw["usage"].assign(value=lambda u: u["value"].fillna(0.0))
    activity = usage[usage["billable_metric_id"].isin(activity_ids)]
    window_day = activity["start_timestamp"].dt.floor("D")
    for name, lo, hi in (
        ("usage_7d", as_of - 7 * day, as_of),
        ("usage_prior_7d", as_of - 14 * day, as_of - 7 * day),
    ):
        inside = (activity["start_timestamp"] >= lo) & (activity["end_timestamp"] <= hi)
        counted = (activity["window_size"] == "DAY") | (window_day < lo) | (window_day + day > hi)
        sums = activity[inside & counted].groupby("customer_id")["value"].sum()
        out[name] = out["customer_id"].map(sums).fillna(0.0)
    prior = out["usage_prior_7d"]
    out["wow_usage_change_pct"] = np.where(
        prior != 0, 100.0 * (out["usage_7d"] - prior) / prior.where(prior != 0), np.nan
    )

    used = usage[(usage["value"] > 0) & (usage["end_timestamp"] <= as_of)]
    out["last_usage_at"] = out["customer_id"].map(used.groupby("customer_id")["end_timestamp"].max())
    out["days_since_last_usage"] = np.floor((as_of - out["last_usage_at"]).dt.total_seconds() / 86400.0)

    # Contracts: the covering one (latest start), and new non-first contracts in the last 30 / 14 days.
    contracts = raw["contracts"]
    contracts = contracts[contracts["archived_at"].isna()].sort_values(["customer_id", "starting_at", "id"])
    contracts = contracts.assign(seq=contracts.groupby("customer_id").cumcount() + 1)
    covering = contracts[
        (contracts["starting_at"] <= as_of)
        & (contracts["ending_before"].isna() | (as_of < contracts["ending_before"]))
    ]
    covering = covering.sort_values(["customer_id", "starting_at", "id"], ascending=[True, False, True])
    covering = covering.drop_duplicates("customer_id").set_index("customer_id")
    out["contract_id"] = out["customer_id"].map(covering["id"])
    out["contract_end"] = out["customer_id"].map(covering["ending_before"])
    out["days_to_renewal"] = (out["contract_end"].dt.normalize() - as_of.normalize()).dt.days
    recent = contracts[
        (contracts["starting_at"] >= as_of - 30 * day)
        & (contracts["starting_at"] < as_of)
        & (contracts["seq"] > 1)
    ]
    out["plan_changed_30d"] = out["customer_id"].isin(set(recent["customer_id"]))
    renewed = set(recent.loc[recent["starting_at"] >= as_of - 14 * day, "customer_id"])
    out["renewed_14d"] = out["customer_id"].isin(renewed)

    # Commits and credits: segments usable at as_of and their ledger before as_of.
    balances = raw["balances"]
    balances = balances[balances["archived_at"].isna()]
    segments, ledger = [], []
    for customer, contract, kind, items, entries in zip(
        balances["customer_id"], balances["contract_id"], balances["type"], balances["schedule_items"],
        balances["ledger"], strict=True,
    ):  # fmt: skip
        for item in json.loads(items) if isinstance(items, str) else []:
            segments.append((customer, contract, kind, item.get("id"), item.get("amount"), item.get("starting_at"),
                             item.get("ending_before")))  # fmt: skip
        for entry in json.loads(entries) if isinstance(entries, str) else []:
            ledger.append((customer, kind, entry.get("type"), entry.get("segment_id"), entry.get("amount"),
                           entry.get("timestamp")))  # fmt: skip
    segments = pd.DataFrame(
        segments,
        columns=[
            "customer_id",
            "contract_id",
            "type",
            "segment_id",
            "amount",
            "starting_at",
            "ending_before",
        ],
    )
    ledger = pd.DataFrame(
        ledger, columns=["customer_id", "type", "entry_type", "segment_id", "amount", "entry_at"]
    )
    for frame, columns in ((segments, ("starting_at", "ending_before")), (ledger, ("entry_at",))):
        for column in columns:
            frame[column] = _utc_naive(frame[column])
    segments["amount"] = pd.to_numeric(segments["amount"]).astype(float)
    ledger["amount"] = pd.to_numeric(ledger["amount"]).astype(float)

    active = segments[
        segments["type"].isin(["PREPAID", "CREDIT"])
        & (segments["starting_at"] <= as_of)
        & (as_of < segments["ending_before"])
    ]
    spent = ledger[ledger["entry_at"] < as_of].groupby("segment_id")["amount"].sum()
    active = active.assign(remaining=active["segment_id"].map(spent).fillna(0.0).clip(lower=0.0))
    credits = active.groupby("customer_id").agg(
        credit_balance=("remaining", "sum"), granted=("amount", "sum")
    )
    out["credit_balance"] = out["customer_id"].map(credits["credit_balance"]).fillna(0.0)
    granted = out["customer_id"].map(credits["granted"])
    deductions = ledger[
        ledger["type"].isin(["PREPAID", "CREDIT"])
        & ledger["entry_type"].str.endswith("AUTOMATED_INVOICE_DEDUCTION")
        & (ledger["entry_at"] >= as_of - 7 * day)
        & (ledger["entry_at"] < as_of)
    ]
    burn = -deductions.groupby("customer_id")["amount"].sum() / 7.0
    out["credit_burn_daily"] = out["customer_id"].map(burn).fillna(0.0)
    positive_burn = out["credit_burn_daily"].where(out["credit_burn_daily"] > 0)
    out["days_until_credits_depleted"] = out["credit_balance"] / positive_burn
    out["credit_used_pct"] = 100.0 * (granted - out["credit_balance"]) / granted.where(granted > 0)

    # The latest finalized invoice that the billing provider knows about.
    invoices = raw["invoices"]
    billed = invoices[
        (invoices["status"] == "FINALIZED")
        & invoices["external_status"].notna()
        & (invoices["issued_at"] < as_of)
    ]
    latest = billed.sort_values(["customer_id", "issued_at", "id"], ascending=[True, False, False])
    latest = latest.drop_duplicates("customer_id").set_index("customer_id")["external_status"]
    out["has_failed_payment"] = out["customer_id"].map(latest).isin(_FAILED)

    # Value: paid invoices (finalized, and PAID or without a billing-provider status) and the covering contract's
    # prepaid commits per year; deciles of the value within the tenant (ties share the highest one's decile).
    paid = invoices[
        (invoices["status"] == "FINALIZED")
        & invoices["external_status"].fillna("PAID").eq("PAID")
        & (invoices["issued_at"] < as_of)
    ]
    out["revenue_to_date"] = out["customer_id"].map(paid.groupby("customer_id")["total"].sum()).fillna(0.0)
    recent_paid = paid[paid["issued_at"] >= as_of - 90 * day]
    out["revenue_90d"] = out["customer_id"].map(recent_paid.groupby("customer_id")["total"].sum()).fillna(0.0)
    commits = segments[
        (segments["type"] == "PREPAID")
        & (segments["starting_at"] <= as_of)
        & (as_of < segments["ending_before"])
    ]
    commits = commits[commits["contract_id"] == commits["customer_id"].map(covering["id"])]
    length_days = ((commits["ending_before"] - commits["starting_at"]).dt.total_seconds() / 86400.0).clip(
        lower=1
    )
    per_year = (commits["amount"] * 365.0 / length_days).groupby(commits["customer_id"]).sum()
    out["contract_value_per_year"] = out["customer_id"].map(per_year)
    out["annual_value"] = out["contract_value_per_year"].fillna(out["revenue_90d"] * 365.0 / 90)
    cume_dist = out["annual_value"].rank(method="max") / len(out)
    out["value_decile"] = np.ceil(10 * cume_dist).astype("Int64")

    # Rhythm: distinct UTC days with activity in the last 90 whole days, the median gap between them (4+ days).
    days = activity[
        (activity["window_size"] == "DAY")
        & (activity["value"] > 0)
        & (activity["start_timestamp"] >= as_of - 90 * day)
        & (activity["end_timestamp"] <= as_of)
    ]
    days = days.assign(day=days["start_timestamp"].dt.floor("D"))[["customer_id", "day"]].drop_duplicates()
    days = days.sort_values(["customer_id", "day"])
    gaps = days.groupby("customer_id")["day"].diff().dt.days
    rhythm = (
        days.assign(gap=gaps)
        .groupby("customer_id")
        .agg(
            active_days_90d=("day", "size"),
            last_active_day=("day", "max"),
            typical_gap_days=("gap", "median"),
        )
    )
    rhythm.loc[rhythm["active_days_90d"] < 4, "typical_gap_days"] = np.nan
    out["active_days_90d"] = out["customer_id"].map(rhythm["active_days_90d"]).fillna(0).astype(int)
    out["last_active_day"] = out["customer_id"].map(rhythm["last_active_day"])
    out["typical_gap_days"] = out["customer_id"].map(rhythm["typical_gap_days"]).astype(float)
    out["expected_next_active_day"] = out["last_active_day"] + pd.to_timedelta(
        np.ceil(out["typical_gap_days"]), unit="D"
    )
    out["days_overdue"] = (as_of.normalize() - out["expected_next_active_day"]).dt.days

    out.insert(1, "cadence", cadence)
    out.insert(2, "as_of", as_of)
    return out


# -------------------------------------------------------------------------------------------- comparison


def _same(a, b, rel: float, abs_tol: float) -> bool:
    a_missing = a is None or (isinstance(a, float) and math.isnan(a)) or a is pd.NaT
    b_missing = b is None or (isinstance(b, float) and math.isnan(b)) or b is pd.NaT
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, pd.Timestamp | datetime) or isinstance(b, pd.Timestamp | datetime):
        return pd.Timestamp(a) == pd.Timestamp(b)
    if isinstance(a, bool | np.bool_) or isinstance(b, bool | np.bool_):
        return bool(a) == bool(b)
    if isinstance(a, int | float | np.number) and isinstance(b, int | float | np.number):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_tol)
    return a == b


def _cell(value):
    if value is pd.NaT or value is pd.NA:
        return None
    return value.item() if isinstance(value, np.generic) else value


def compare_features(
    sql: pd.DataFrame,
    pandas: pd.DataFrame,
    sample: int | None = None,
    rel: float = 1e-9,
    abs_tol: float = 1e-6,
) -> dict:
    """Every column of the SQL model against the pandas version, customer by customer (optionally a sample)."""
    columns = [c for c in sql.columns if c in pandas.columns]
    missing_columns = sorted(set(sql.columns) - set(pandas.columns))
    left, right = sql.set_index("customer_id"), pandas.set_index("customer_id")
    only_sql, only_pandas = (
        sorted(set(left.index) - set(right.index)),
        sorted(set(right.index) - set(left.index)),
    )
    keys = sorted(set(left.index) & set(right.index))
    if sample is not None and len(keys) > sample:
        keys = list(np.random.default_rng(0).choice(keys, sample, replace=False))
    mismatches: dict[str, int] = {}
    examples: list[dict] = []
    for column in [c for c in columns if c != "customer_id"]:
        a, b = left.loc[keys, column], right.loc[keys, column]
        bad = [k for k, x, y in zip(keys, a, b, strict=True) if not _same(_cell(x), _cell(y), rel, abs_tol)]
        if bad:
            mismatches[column] = len(bad)
            examples += [
                {
                    "customer_id": k,
                    "column": column,
                    "sql": str(left.at[k, column]),
                    "pandas": str(right.at[k, column]),
                }
                for k in bad[:2]
            ]
    return {
        "equal": not (mismatches or missing_columns or only_sql or only_pandas),
        "rows_compared": len(keys),
        "columns_compared": len(columns) - 1,
        "missing_columns": missing_columns,
        "only_in_sql": len(only_sql),
        "only_in_pandas": len(only_pandas),
        "mismatches": mismatches,
        "examples": examples[:10],
    }


def as_of_rows(con, cadence: str, as_of: datetime) -> pd.DataFrame:
    return con.execute(
        "SELECT * FROM analytics.customer_features WHERE cadence = ? AND as_of = ?",
        [cadence, as_of.replace(tzinfo=None)],
    ).df()
