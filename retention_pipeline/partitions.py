"""Partition definitions of the cadences (defined once in cadences.py): every cadence-partitioned asset and job
uses these.

Every cadence-partitioned asset handles a partition range in one step (`BackfillPolicy.single_run()`), so a
backfill of 30 days is one run, and the jobs see one backfill policy."""

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

from retention_pipeline.cadences import BY_NAME
from retention_pipeline.cadences import cadence as cadence_of

BY_CADENCE = {name: c.partitions_def for name, c in BY_NAME.items()}
STEP = {name: c.step for name, c in BY_NAME.items()}
HOURLY, DAILY, WEEKLY = BY_CADENCE["hourly"], BY_CADENCE["daily"], BY_CADENCE["weekly"]


def latest_complete_partition(cadence: str, now: datetime) -> str:
    """The key of the newest partition of the cadence that has fully ended at `now`."""
    of = cadence_of(cadence)
    return of.partitions_def.get_partition_key_for_timestamp((now - of.step).timestamp())


def last_partitions(cadence: str, latest: str, count: int) -> list[str]:
    """The `count` partition keys of the cadence ending with `latest`, oldest first (fewer near the start).

    Counted back from `latest` rather than listed up to the wall clock, so a pinned sandbox clock works too."""
    of = cadence_of(cadence)
    partitions_def = of.partitions_def
    latest_start = partitions_def.time_window_for_partition_key(latest).start
    starts = [latest_start - i * of.step for i in range(count)]
    first = partitions_def.start
    return [
        partitions_def.get_partition_key_for_timestamp(start.timestamp())
        for start in reversed(starts)
        if start >= first
    ]


def partitions_of_run(context: dg.AssetExecutionContext, cadence: str) -> list[tuple[str, datetime]]:
    """(partition key, as_of = its end) of every partition this step materializes, oldest first: one for a
    scheduled run, the whole range for a backfill."""
    partitions_def = cadence_of(cadence).partitions_def
    keys: Sequence[str] = context.partition_keys
    windows = [(key, partitions_def.time_window_for_partition_key(key).end) for key in keys]
    return sorted(windows, key=lambda item: item[1])


def partitioned_asset(
    *,
    key: dg.AssetKey,
    cadence: str,
    deps: Sequence = (),
    description: str,
    metadata: dict,
    kinds: set[str],
    group_name: str,
    tags: dict | None = None,
    check_specs: Sequence[dg.AssetCheckSpec] = (),
    **op_kwargs,
):
    """A cadence-partitioned asset computed over a partition range in one step (BackfillPolicy.single_run()).

    A multi_asset with one spec: `backfill_policy` is a beta parameter of `@asset` (a BetaWarning on every load) but
    not of `@multi_asset`. The op is named like `@asset` names it (`segments__members_daily`), so step keys stay."""
    spec = dg.AssetSpec(
        key,
        deps=list(deps),
        description=description,
        metadata=metadata,
        kinds=kinds,
        group_name=group_name,
        tags={"cadence": cadence, **(tags or {})},
    )
    return dg.multi_asset(
        name=key.to_python_identifier(),
        specs=[spec],
        partitions_def=cadence_of(cadence).partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=list(check_specs),
        **op_kwargs,
    )
