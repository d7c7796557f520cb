"""Partitioned jobs per cadence: every asset of the project except those tagged with another cadence.

Cadence-partitioned assets carry the tag `cadence` (hourly/daily/weekly); unpartitioned snapshot assets carry none
and run with every cadence (hourly segments need fresh balances and invoices)."""

import dagster as dg

from retention_pipeline.partitions import DAILY, HOURLY

CADENCES = ("hourly", "daily", "weekly")


def cadence_selection(cadence: str) -> dg.AssetSelection:
    others = [c for c in CADENCES if c != cadence]
    return (
        dg.AssetSelection.all()
        - dg.AssetSelection.tag("cadence", others[0])
        - dg.AssetSelection.tag("cadence", others[1])
    )


daily_retention = dg.define_asset_job(
    "daily_retention",
    selection=cadence_selection("daily"),
    partitions_def=DAILY,
    description="Daily cadence: snapshot extraction and day-window usage for the day (plus late-data lookback).",
)
hourly_retention = dg.define_asset_job(
    "hourly_retention",
    selection=cadence_selection("hourly"),
    partitions_def=HOURLY,
    description="Hourly cadence: snapshot extraction and hour-window usage (its day so far plus lookback).",
)

defs = dg.Definitions(jobs=[daily_retention, hourly_retention])
