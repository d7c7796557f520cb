"""One activation asset per cadence: push what changed in that cadence's segments to every destination."""

import dataclasses

import dagster as dg

from retention_pipeline.config import ConfigError, env, env_parsed
from retention_pipeline.destinations import warehouse_export
from retention_pipeline.destinations.adapters import CustomerIoAdapter, GoogleAdapter, MetaAdapter
from retention_pipeline.destinations.resources import (
    CustomerIoResource,
    GoogleDataManagerResource,
    MetaResource,
)
from retention_pipeline.destinations.routing import Routing, load_routing
from retention_pipeline.destinations.sync import DestinationReport, SyncContext, ensure_tables, run_sync
from retention_pipeline.models.assets import WRITES
from retention_pipeline.partitions import BY_CADENCE
from retention_pipeline.segments.engine import ensure_tables as ensure_segment_tables
from retention_pipeline.segments.project import Segment
from retention_pipeline.warehouse import DuckDBWarehouse

GROUP = "destinations"
TRUE = {"1", "true", "yes", "on"}


class SyncConfig(dg.Config):
    """`dry_run: true` (or RETENTION_DRY_RUN=1) computes and shows the plan but sends nothing."""

    dry_run: bool = False


def dry_run_requested(config: SyncConfig) -> bool:
    raw = env("RETENTION_DRY_RUN").strip().lower()
    if raw not in TRUE | {"0", "false", "no", "off", ""}:
        raise ConfigError(f"RETENTION_DRY_RUN={raw!r} must be 1/true or 0/false.")
    return config.dry_run or raw in TRUE


def with_sandbox_objects(routing: Routing, cio, meta) -> Routing:
    """In-process sandboxes start empty each run: create the manual segments and audiences the routing names."""
    if cio.sandbox is not None:
        routing = dataclasses.replace(
            routing,
            customerio_segments={n: str(cio.sandbox.create_segment(n)) for n in routing.customerio_segments},
        )
    if meta.sandbox is not None:
        routing = dataclasses.replace(
            routing, meta_audiences={n: meta.sandbox.create_audience(n) for n in routing.meta_audiences}
        )
    return routing


def _segment_status(con, cadence: str) -> dict[str, tuple]:
    """segment → (latest as_of, guard status) of the cadence's segments."""
    rows = con.execute(
        """SELECT segment, as_of, guard_status FROM segments.partitions AS p
        WHERE cadence = ? AND as_of = (SELECT max(as_of) FROM segments.partitions AS q WHERE q.segment = p.segment)""",
        [cadence],
    ).fetchall()
    return {segment: (as_of, status) for segment, as_of, status in rows}


def _metadata(reports: list[DestinationReport], dry_run: bool, blocked: set[str], stale: list[str]) -> dict:
    metadata: dict = {"dry_run": dry_run, "blocked_segments": len(blocked), "stale_segments": len(stale)}
    for r in reports:
        prefix = f"{r.segment}/{r.destination}"
        metadata |= {
            f"{prefix}/adds": r.adds,
            f"{prefix}/removes": r.removes,
            f"{prefix}/updates": r.updates,
            f"{prefix}/requests": r.requests,
            f"{prefix}/acknowledged": r.acked,
            f"{prefix}/rejected": r.rejected,
        }
    metadata["requests"] = sum(r.requests for r in reports)
    metadata["expected_requests"] = sum(r.expected_requests for r in reports)
    rows = "\n".join(
        f"| {r.segment} | {r.destination} | +{r.adds} −{r.removes} ~{r.updates} | {r.requests}/{r.expected_requests} "
        f"| {r.acked} | {r.rejected} | {r.with_identifier}/{r.people} | {r.skipped or ', '.join(r.warnings) or ''} |"
        for r in reports
    )
    header = "| segment | destination | plan | requests/expected | acked | rejected | identifiable/people | note |\n"
    metadata["plan"] = dg.MetadataValue.md(
        (f"**Blocked by the size guard:** {', '.join(sorted(blocked))}\n\n" if blocked else "")
        + ("**Dry run: nothing sent.**\n\n" if dry_run else "")
        + header + "|---|---|---|---|---|---|---|---|\n" + rows
    )  # fmt: skip
    return metadata


def build_sync_asset(cadence: str, segments: list[Segment]) -> dg.AssetsDefinition:
    key = dg.AssetKey(["sync", f"activation_{cadence}"])
    mine = [s for s in segments if s.cadence == cadence]

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(["segments", f"members_{cadence}"])],
        group_name=GROUP,
        kinds={"customerio", "meta", "google", "duckdb"},
        pool="duckdb",
        partitions_def=BY_CADENCE[cadence],
        tags={"cadence": cadence},
        description=(
            f"Pushes only what changed in the {cadence} segments since the last acknowledged sync to Customer.io, "
            "Meta and Google (sync.ledger, sync.destination_state) and exports the partition as Parquet."
        ),
        metadata={
            "dagster/table_name": "sync.destination_state",
            WRITES: "sync.ledger, sync.ledger_items, sync.coverage, sync.last_plan, sync.runs",
        },
        check_specs=[
            dg.AssetCheckSpec("identifier_coverage", asset=key),
            dg.AssetCheckSpec(
                "all_changes_acknowledged",
                asset=key,
                description="Every planned change was acknowledged; rejected rows are retried next run",
            ),
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: SyncConfig,
        duckdb: DuckDBWarehouse,
        customerio: CustomerIoResource,
        meta: MetaResource,
        google: GoogleDataManagerResource,
    ) -> dg.MaterializeResult:
        dry_run = dry_run_requested(config)
        threshold = env_parsed("RETENTION_COVERAGE_MIN_PCT", float, what="a percentage")
        as_of = context.partition_time_window.end.replace(tzinfo=None)
        routing = load_routing()
        with duckdb.connect() as con:
            ensure_segment_tables(con)
            ensure_tables(con)
            status = _segment_status(con, cadence)
        stale = [s.name for s in mine if status.get(s.name, (None,))[0] != as_of]
        if stale:
            context.log.warning(
                f"not syncing {', '.join(stale)}: partition {context.partition_key} is not their latest computed "
                "partition (a newer one exists, or this one was never computed)"
            )
        blocked = {s for s, (a, st) in status.items() if st == "blocked" and a == as_of}
        routing = with_sandbox_objects(routing, customerio.connection(), meta.connection())
        adapters = {
            "customerio": CustomerIoAdapter(customerio.connection().client, routing),
            "meta": MetaAdapter(meta.connection().client, routing),
            "google": GoogleAdapter(google.connection().client, routing),
        }
        ctx = SyncContext(f"{context.run_id}:{context.partition_key}", cadence, context.partition_key, as_of)
        reports = run_sync(
            duckdb.connect,
            [s for s in mine if s.name not in stale],
            adapters,
            ctx,
            dry_run=dry_run,
            blocked=blocked,
            log=context.log.info,
        )
        exported = {}
        with duckdb.connect() as con:
            if not dry_run:
                exported = warehouse_export.export_partition(
                    con, warehouse_export.export_dir(), cadence, context.partition_key
                )
            for r in reports:
                if r.destination == "meta" and r.removes:
                    size = con.execute(
                        "SELECT count(*) FROM sync.destination_state WHERE segment = ? AND destination = 'meta'",
                        [r.segment],
                    ).fetchone()[0]
                    if size < routing.meta_min_audience_floor:
                        r.warnings.append(f"audience at {size} < floor {routing.meta_min_audience_floor}")
                        context.log.warning(
                            f"{r.segment} → meta: removals leave {size} people, below the floor of "
                            f"{routing.meta_min_audience_floor} (meta.min_audience_floor)"
                        )
        low = [
            f"{r.segment}/{r.destination} {100 * r.with_identifier / r.people:.0f}%"
            for r in reports
            if r.people and 100 * r.with_identifier / r.people < threshold
        ]
        metadata = _metadata(reports, dry_run, blocked, stale) | {
            f"exported_{k}": v for k, v in exported.items()
        }
        outages = [r for r in reports if r.failed_requests]
        if outages:
            # Everything is in the ledger and nothing acknowledged is lost; the run must still not look green.
            raise dg.Failure(
                description="; ".join(
                    f"{r.segment} → {r.destination}: {r.failed_requests} request(s) failed ({r.first_error})"
                    for r in outages
                )
                + " — unacknowledged changes stay planned and are retried on the next run.",
                metadata=metadata,
            )
        rejected = {f"{r.segment}/{r.destination}": r.rejected for r in reports if r.rejected}
        if rejected:
            context.log.warning(f"rows rejected by destinations (retried next run): {rejected}")
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name="identifier_coverage",
                    passed=not low,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"below_threshold": ", ".join(low) or "none", "threshold_pct": threshold},
                    description=f"Share of routed people with a usable identifier ≥ {threshold:g}% "
                    "(RETENTION_COVERAGE_MIN_PCT)",
                ),
                dg.AssetCheckResult(
                    check_name="all_changes_acknowledged",
                    passed=not rejected,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"rejected": sum(rejected.values()), **rejected},
                    description="Rows a destination rejected (see sync.ledger_items); they are retried next run",
                ),
            ],
        )

    return _asset
