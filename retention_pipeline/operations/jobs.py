"""Partitioned jobs per cadence. Each selects whole stage groups, so later stages join the jobs by group."""

import dagster as dg

from retention_pipeline.partitions import DAILY, HOURLY

HOURLY_USAGE = dg.AssetKey(["raw", "metronome_usage_hourly"])
DAILY_USAGE = dg.AssetKey(["raw", "metronome_usage_daily"])

# Snapshot extraction (customers, contracts, invoices, balances, contacts) runs with both cadences: hourly segments
# (credits nearly gone, failed payment) need fresh balances and invoices.
daily_retention = dg.define_asset_job(
    "daily_retention",
    selection=dg.AssetSelection.groups("source") - dg.AssetSelection.assets(HOURLY_USAGE),
    partitions_def=DAILY,
    description="Daily cadence: extraction for the day (plus late-data lookback).",
)
hourly_retention = dg.define_asset_job(
    "hourly_retention",
    selection=dg.AssetSelection.groups("source") - dg.AssetSelection.assets(DAILY_USAGE),
    partitions_def=HOURLY,
    description="Hourly cadence: extraction for the hour (its day so far plus late-data lookback).",
)

defs = dg.Definitions(jobs=[daily_retention, hourly_retention])
