"""The cadences, defined once: hourly, daily, weekly — their partitions, step, partition keys and schedule.

A partition of a cadence covers [start, start + step); its key is the start in `key_format` (UTC) and its `as_of`
is the end, the instant its features, segments and syncs are computed at. Everything else (partitions.py, the model
and segment loaders, the jobs and schedules, the fixtures) takes these from here.

Free of Dagster at import, so the `sql` and `preview` commands (which read the model and segment files) start without
it: the Dagster partitions definition is built on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

PARTITIONS_START = "2026-01-01"


@dataclass(frozen=True)
class Cadence:
    name: str
    step: timedelta
    key_format: str  # strftime format of a partition key: Dagster's default for the partitions definition
    # Offsets of the tick of the cadence's job schedule after a partition ends (build_schedule_from_partitioned_job's
    # minute_of_hour, hour_of_day, ...); None: the cadence has no job of its own.
    schedule_offsets: dict[str, int] | None = field(default=None, hash=False)

    @cached_property
    def partitions_def(self) -> dg.TimeWindowPartitionsDefinition:
        """The Dagster partitions of the cadence (UTC, from PARTITIONS_START); one object per cadence."""
        import dagster as dg

        if self.name == "hourly":
            return dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", timezone="UTC")
        if self.name == "daily":
            return dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
        return dg.WeeklyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

    @property
    def cron(self) -> str | None:
        """The cron of the cadence's job schedule (None without one)."""
        if self.schedule_offsets is None:
            return None
        return self.partitions_def.get_cron_schedule(**self.schedule_offsets)

    def key_to_as_of(self, key: str) -> datetime:
        """The end of the partition `key` (UTC): the as_of its rows are computed at."""
        return datetime.strptime(key, self.key_format).replace(tzinfo=UTC) + self.step

    def as_of_to_key(self, as_of: datetime) -> str:
        """The key of the partition that ends at `as_of` (naive datetimes are UTC)."""
        if as_of.tzinfo is not None:
            as_of = as_of.astimezone(UTC)
        return (as_of - self.step).strftime(self.key_format)


# Finest first: a coarser cadence's segments may exclude a finer one's, so loops over cadences go in this order.
# Each schedule tick runs the partition that just ended, a few minutes late so Metronome has aggregated the last usage.
BY_NAME: dict[str, Cadence] = {
    c.name: c
    for c in (
        Cadence("hourly", timedelta(hours=1), "%Y-%m-%d-%H:%M", {"minute_of_hour": 10}),
        Cadence("daily", timedelta(days=1), "%Y-%m-%d", {"hour_of_day": 0, "minute_of_hour": 40}),
        # Weekly: only the churn model trains on it, on Sunday after the daily run of Saturday has landed.
        Cadence(
            "weekly",
            timedelta(weeks=1),
            "%Y-%m-%d",
            {"day_of_week": 0, "hour_of_day": 2, "minute_of_hour": 10},
        ),
    )
}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def cadence(name: str) -> Cadence:
    """The cadence called `name`; an unknown name fails listing the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown cadence {name!r}; cadences are {', '.join(NAMES)}") from None
