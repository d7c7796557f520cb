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
    description="Daily cadence for the day: extraction (plus late-data lookback), features, daily segments, their "
    "sync, measurement, and a fresh published copy for analysts.",
)
hourly_retention = dg.define_asset_job(
    "hourly_retention",
    selection=cadence_selection("hourly"),
    partitions_def=HOURLY,
    description="Hourly cadence for the hour: extraction (its day so far plus lookback), features, the urgent "
    "hourly segments, their sync, measurement, and a fresh published copy for analysts.",
)

# Each tick runs the partition that just ended, a few minutes late so Metronome has aggregated the last usage.
# Both start stopped: turn them on in the UI (Automation) or with `dagster schedule start`.
hourly_schedule = dg.build_schedule_from_partitioned_job(
    hourly_retention, minute_of_hour=10, name="hourly_retention_schedule"
)
daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_retention, hour_of_day=0, minute_of_hour=40, name="daily_retention_schedule"
)

defs = dg.Definitions(jobs=[daily_retention, hourly_retention], schedules=[hourly_schedule, daily_schedule])
