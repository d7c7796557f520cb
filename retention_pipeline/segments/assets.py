"""One partitioned asset per cadence computing every segment of that cadence as of the partition end."""

import dagster as dg

from retention_pipeline.models.assets import WRITES, set_run_variables
from retention_pipeline.models.quality import failing_error_tests
from retention_pipeline.partitions import BY_CADENCE
from retention_pipeline.segments.engine import (
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


def _metadata(stats: list[SegmentStats], as_of) -> dict:
    metadata: dict = {"as_of": as_of.isoformat()}
    for s in stats:
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
    return metadata


def build_segment_asset(
    cadence: str, segments: list[Segment], deps: list[dg.AssetKey], gated_models: list[str]
) -> dg.AssetsDefinition:
    """`gated_models`: the models whose failing ERROR tests block this cadence's target segments."""
    key = dg.AssetKey(["segments", f"members_{cadence}"])
    mine = segments_of_cadence(segments, cadence)
    lines = "\n".join(f"- **{s.name}** ({s.purpose}): {s.description}" for s in mine)

    @dg.asset(
        key=key,
        deps=deps,
        group_name=GROUP,
        kinds={"duckdb", "sql"},
        pool="duckdb",
        partitions_def=BY_CADENCE[cadence],
        tags={"cadence": cadence},
        description=f"Members of the {cadence} segments as of the partition end (segments.members).\n\n{lines}",
        metadata={
            "dagster/table_name": "segments.members",
            WRITES: "segments.changes, segments.partitions, segments.definitions",
        },
        check_specs=[
            *[
                dg.AssetCheckSpec(
                    f"size_guard_{s.name}",
                    asset=key,
                    # Not blocking in Dagster: the sync holds back exactly the segments whose guard failed and
                    # still removes suppressed people from every ad audience, which a skipped step could not do.
                    description=f"{s.name}: size change ≤ {s.max_change_pct:g}% vs the previous partition, not "
                    f"to 0, ≥ {s.min_size}"
                    + ("; no failing ERROR data test upstream" if s.purpose == "target" else "")
                    + "; blocks activation until re-run with override_guard",
                )
                for s in mine
            ],
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, config: SegmentRunConfig, duckdb: DuckDBWarehouse
    ) -> dg.MaterializeResult:
        as_of = context.partition_time_window.end
        with duckdb.connect() as con:
            set_run_variables(con, cadence, as_of)
            ensure_tables(con)
            features = con.execute(
                f"SELECT count(*) FROM {FEATURES_TABLE} WHERE cadence = getvariable('cadence') "
                "AND as_of = getvariable('as_of')"
            ).fetchone()[0]
            if features == 0:
                raise RuntimeError(
                    f"{FEATURES_TABLE} has no rows for cadence={cadence}, as_of={as_of:%Y-%m-%d %H:%M}: materialize "
                    f"analytics/customer_features_{cadence} for partition {context.partition_key} first."
                )
            stats = compute_partition(
                con,
                segments,
                cadence,
                context.partition_key,
                as_of,
                override=set(config.override_guard),
                failing_tests=failing_error_tests(con, gated_models, cadence, as_of),
            )
            checks = [
                dg.AssetCheckResult(
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
                for s in stats
            ]
        for s in stats:
            if s.guard_status != "ok":
                context.log.warning(f"size guard {s.guard_status} for {s.segment}: {s.guard_reason}")
        return dg.MaterializeResult(metadata=_metadata(stats, as_of), check_results=checks)

    return _asset
