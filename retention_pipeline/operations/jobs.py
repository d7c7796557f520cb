"""Partitioned jobs per cadence: every asset of the project except those tagged with another cadence; and the weekly
churn model's job, which selects only its training asset.

Cadence-partitioned assets carry the tag `cadence` (hourly/daily/weekly); unpartitioned snapshot assets carry none
and run with every cadence (hourly segments need fresh balances and invoices). A job's partitions are those of the
assets it selects (the cadence's, from cadences.py), so they are not repeated here; nor are the schedules' offsets."""

import dagster as dg

from retention_pipeline.cadences import NAMES as CADENCES
from retention_pipeline.cadences import cadence as cadence_of
from retention_pipeline.models.churn import TRAINING_KEY


def cadence_selection(cadence: str) -> dg.AssetSelection:
    selection = dg.AssetSelection.all()
    for other in CADENCES:
        if other != cadence:
            selection = selection - dg.AssetSelection.tag("cadence", other)
    return selection


def cadence_schedule(job, cadence: str) -> dg.ScheduleDefinition:
    """The job's schedule: each tick runs the partition that just ended, at the cadence's offsets (cadences.py)."""
    return dg.build_schedule_from_partitioned_job(
        job, name=f"{job.name}_schedule", **cadence_of(cadence).schedule_offsets
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

# The weekly cadence runs only the churn model's training: the daily job scores with whatever model is newest.
weekly_churn_model = dg.define_asset_job(
    "weekly_churn_model",
    selection=dg.AssetSelection.assets(dg.AssetKey(list(TRAINING_KEY))),
    description="Weekly churn model for the week: point-in-time training set as of the week's end, backtest vs the "
    "best single-rule baseline, calibrated model stored in analytics.churn_models (or why not).",
)

# All start stopped: turn them on in the UI (Automation) or with `dagster schedule start`.
hourly_schedule = cadence_schedule(hourly_retention, "hourly")
daily_schedule = cadence_schedule(daily_retention, "daily")
weekly_churn_model_schedule = cadence_schedule(weekly_churn_model, "weekly")

# Every asset writes the DuckDB file in pool "duckdb" (limit 1), so steps run one at a time anyway: a process per step
# (the default multiprocess executor) would only add a definitions import (~4 s) to every step. The executor applies
# to both jobs, the UI's ad-hoc materializations and `dg launch` alike.
defs = dg.Definitions(
    jobs=[daily_retention, hourly_retention, weekly_churn_model],
    schedules=[hourly_schedule, daily_schedule, weekly_churn_model_schedule],
    executor=dg.in_process_executor,
)
