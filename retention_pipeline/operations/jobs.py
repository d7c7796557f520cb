"""Partitioned jobs per cadence: every asset of the project except those tagged with another cadence.

Cadence-partitioned assets carry the tag `cadence` (hourly/daily/weekly); unpartitioned snapshot assets carry none
and run with every cadence (hourly segments need fresh balances and invoices). A job's partitions are those of the
assets it selects (DAILY or HOURLY from partitions.py), so they are not repeated here."""

import dagster as dg

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
    description="Daily cadence for the day: extraction (plus late-data lookback), features, daily segments, their "
    "sync, measurement, and a fresh published copy for analysts.",
)
hourly_retention = dg.define_asset_job(
    "hourly_retention",
    selection=cadence_selection("hourly"),
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

# Every asset writes the DuckDB file in pool "duckdb" (limit 1), so steps run one at a time anyway: a process per step
# (the default multiprocess executor) would only add a definitions import (~4 s) to every step. The executor applies
# to both jobs, the UI's ad-hoc materializations and `dg launch` alike.
defs = dg.Definitions(
    jobs=[daily_retention, hourly_retention],
    schedules=[hourly_schedule, daily_schedule],
    executor=dg.in_process_executor,
)
