"""Partition definitions, defined once: every cadence-partitioned asset and job uses these constants."""

from datetime import datetime, timedelta

import dagster as dg

PARTITIONS_START = "2026-01-01"

HOURLY = dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", timezone="UTC")
DAILY = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
WEEKLY = dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

BY_CADENCE = {"hourly": HOURLY, "daily": DAILY, "weekly": WEEKLY}


def latest_complete_partition(cadence: str, now: datetime) -> str:
    """The key of the newest partition of the cadence that has fully ended at `now`."""
    step = {"hourly": timedelta(hours=1), "daily": timedelta(days=1), "weekly": timedelta(weeks=1)}[cadence]
    return BY_CADENCE[cadence].get_partition_key_for_timestamp((now - step).timestamp())
