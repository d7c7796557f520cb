"""Partition definitions, defined once: every cadence-partitioned asset and job uses these constants."""

import dagster as dg

PARTITIONS_START = "2026-01-01"

HOURLY = dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", timezone="UTC")
DAILY = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
WEEKLY = dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

BY_CADENCE = {"hourly": HOURLY, "daily": DAILY, "weekly": WEEKLY}
