"""One partitioned asset per cadence computing every segment of that cadence as of the partition end."""

from datetime import datetime

import dagster as dg

from retention_pipeline.catalog import Declaration
from retention_pipeline.models.assets import set_run_variables
from retention_pipeline.models.quality import failing_error_tests
from retention_pipeline.partitions import partitioned_asset, partitions_of_run
from retention_pipeline.segments.engine import (
    SKIPPED,
    SegmentStats,
    compute_partition,
    ensure_tables,
    segments_of_cadence,
)
from retention_pipeline.segments.project import Segment
from retention_pipeline.warehouse import DuckDBWarehouse

GROUP = "segments"
FEATURES_TABLE = "analytics.customer_features"


class SegmentRunConfig(dg.Config):
    """`override_guard`: after review, segment names accept a size swing the guard blocked, data test names
    (`usage_is_non_negative` or `analytics.customer_features.usage_is_non_negative`) accept a failing ERROR test,
    "*" accepts everything."""

    override_guard: list[str] = []


def _metadata(stats: list[SegmentStats], as_of, history: list[tuple[str, list[SegmentStats]]]) -> dict:
    """Numeric per-segment values (plotted by the UI) only for a single-partition step and a computed segment:
    Dagster repeats a range step's metadata on every partition of the range (dagster-io/dagster#18123), so a
    backfill's values would be wrong for all but one of them; a range gets a per-day table instead."""
    metadata: dict = {"as_of": as_of.isoformat()}
    if len(history) == 1:
        for s in stats:
            if not s.computed:
                continue  # no value rather than a false 0 in the plot
            metadata |= {
                f"{s.segment}/accounts": s.accounts,
                f"{s.segment}/people": s.people,
                f"{s.segment}/entries": s.entries,
                f"{s.segment}/exits": s.exits,
                f"{s.segment}/holdout_accounts": s.holdout_accounts,
            }
    rows = "\n".join(
        f"| {s.segment} | {s.accounts} | {s.people} | +{s.entries} / −{s.exits} | {s.holdout_accounts} | "
        f"{s.guard_status}{': ' + s.guard_reason if s.guard_reason else ''} |"
        for s in stats
    )
    metadata["preview"] = dg.MetadataValue.md(
        "| segment | accounts | people | entries / exits | holdout | guard |\n|---|---|---|---|---|---|\n"
        + rows
    )
    if len(history) > 1:
        names = [s.segment for s in history[-1][1]]
        metadata["partitions_in_step"] = len(history)
        metadata["history"] = dg.MetadataValue.md(
            "accounts per partition (+entries / −exits)\n\n| partition | "
            + " | ".join(names)
            + " |\n|---|"
            + "---|" * len(names)
            + "\n"
            + "\n".join(
                f"| {key} | "
                + " | ".join(
                    s.guard_status if not s.computed else f"{s.accounts} (+{s.entries}/−{s.exits})"
                    for s in partition_stats
                )
                + " |"
                for key, partition_stats in history
            )
        )
    return metadata


def declaration(cadence: str) -> Declaration:
    """What the cadence's members asset writes (the catalog's part of this stage)."""
    return Declaration(
        dg.AssetKey(["segments", f"members_{cadence}"]),
        ("segments.members", "segments.changes", "segments.partitions", "segments.definitions"),
        GROUP,
        cadence,
    )


def build_segment_asset(
    cadence: str, segments: list[Segment], deps: list[dg.AssetKey], gated_models: list[str]
) -> dg.AssetsDefinition:
    """`gated_models`: the models whose failing ERROR tests block this cadence's target segments."""
    declared = declaration(cadence)
    key = declared.key
    mine = segments_of_cadence(segments, cadence)
    lines = "\n".join(f"- **{s.name}** ({s.purpose}): {s.description}" for s in mine)

    @partitioned_asset(
        key=key,
        cadence=cadence,
        deps=deps,
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        pool="duckdb",
        description=f"Members of the {cadence} segments as of the partition end (segments.members).\n\n{lines}",
        metadata=declared.metadata,
        check_specs=[
            dg.AssetCheckSpec(
                f"size_guard_{s.name}",
                asset=key,
                # Not blocking in Dagster: the sync holds back exactly the segments whose guard failed and still
                # removes suppressed people from every ad audience, which a skipped step could not do.
                description=f"{s.name}: size change ≤ {s.max_change_pct:g}% vs the previous partition, not to 0, "
                f"≥ {s.min_size}"
                + ("; no failing ERROR data test upstream" if s.purpose == "target" else "")
                + "; blocks activation until re-run with override_guard",
            )
            for s in mine
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, config: SegmentRunConfig, duckdb: DuckDBWarehouse
    ) -> dg.MaterializeResult:
        """Computes every partition of the step oldest → newest, each compared with the one before it. Only the
        newest can be synced, so only its guard outcome is the check result and a warning; older ones (a history
        backfill) are recorded in segments.partitions and summarized in one line."""
        partitions = partitions_of_run(context, cadence)
        history: dict[str, list[str]] = {}
        computed: list[tuple[str, list[SegmentStats]]] = []
        with duckdb.connect() as con:
            ensure_tables(con)
            for number, (partition_key, as_of) in enumerate(partitions, start=1):
                if len(partitions) > 1:
                    context.log.info(f"segments {partition_key} ({number}/{len(partitions)})")
                stats = _compute(con, config, cadence, segments, gated_models, partition_key, as_of)
                computed.append((partition_key, stats))
                for s in stats:
                    # Older partitions of a range are never synced, nor is a segment skipped for a missing score in
                    # a range (a model scores only the days after it was trained): one summary line, not warnings.
                    older = number < len(partitions)
                    if s.guard_status != "ok" and (
                        older or (s.guard_status == SKIPPED and len(partitions) > 1)
                    ):
                        history.setdefault(f"{s.segment} {s.guard_status}", []).append(partition_key)
        if history:
            context.log.info(
                "size guard or skips in partitions of this range (recorded, never synced): "
                + "; ".join(f"{what} in {len(keys)} ({keys[0]}…{keys[-1]})" for what, keys in history.items())
            )
        for s in stats:
            if s.guard_status == "failed":  # the engine isolates a segment whose SQL fails
                context.log.warning(f"segment {s.segment} failed: {s.guard_reason}")
            elif s.guard_status == SKIPPED:  # an input it needs (a model score) is missing for the partition
                if len(partitions) == 1:
                    context.log.warning(f"segment {s.segment} {s.guard_reason}")
            elif s.guard_status != "ok":
                context.log.warning(f"size guard {s.guard_status} for {s.segment}: {s.guard_reason}")
        metadata = _metadata(stats, partitions[-1][1], computed)
        return dg.MaterializeResult(metadata=metadata, check_results=[_guard_check(key, s) for s in stats])

    return _asset


def _compute(
    con,
    config: SegmentRunConfig,
    cadence: str,
    segments: list[Segment],
    gated_models: list[str],
    partition_key: str,
    as_of: datetime,
) -> list[SegmentStats]:
    set_run_variables(con, cadence, as_of)
    features = con.execute(
        f"SELECT count(*) FROM {FEATURES_TABLE} WHERE cadence = getvariable('cadence') "
        "AND as_of = getvariable('as_of')"
    ).fetchone()[0]
    if features == 0:
        raise RuntimeError(
            f"{FEATURES_TABLE} has no rows for cadence={cadence}, as_of={as_of:%Y-%m-%d %H:%M}: materialize "
            f"analytics/customer_features_{cadence} for partition {partition_key} first."
        )
    return compute_partition(
        con,
        segments,
        cadence,
        partition_key,
        as_of,
        override=set(config.override_guard),
        failing_tests=failing_error_tests(con, gated_models, cadence, as_of),
    )


def _guard_check(key: dg.AssetKey, s: SegmentStats) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=f"size_guard_{s.segment}",
        asset_key=key,
        passed=not s.blocked,
        metadata={
            "accounts": s.accounts,
            "previous_accounts": s.previous_accounts if s.previous_accounts is not None else -1,
            "change_pct": round(s.change_pct, 1) if s.change_pct is not None else 0.0,
            "status": s.guard_status,
            **({"reason": s.guard_reason} if s.guard_reason else {}),
        },
        description=s.guard_reason,
    )
