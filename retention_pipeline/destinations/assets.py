"""One activation asset per cadence: push what changed in that cadence's segments to every destination."""

import dataclasses
import functools
from collections.abc import Callable

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
from retention_pipeline.destinations.sync import (
    DestinationReport,
    StateChecks,
    SyncContext,
    SyncUnit,
    check_state,
    ensure_tables,
    run_sync,
)
from retention_pipeline.environment import SANDBOX, Target, resolve, verify_bindings
from retention_pipeline.models.assets import WRITES
from retention_pipeline.partitions import partitioned_asset, partitions_of_run
from retention_pipeline.segments.engine import SuppressionStatus, suppression_status
from retention_pipeline.segments.engine import ensure_tables as ensure_segment_tables
from retention_pipeline.segments.project import AD_DESTINATIONS, Segment, routed_destinations
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


def _segment_status(con) -> dict[str, tuple]:
    """segment → (latest as_of, its guard status) of every segment."""
    rows = con.execute(
        """SELECT segment, as_of, CASE WHEN bool_or(guard_status = 'blocked') THEN 'blocked' ELSE 'ok' END
        FROM segments.partitions AS p
        WHERE as_of = (SELECT max(as_of) FROM segments.partitions AS q WHERE q.segment = p.segment)
        GROUP BY segment, as_of"""
    ).fetchall()
    return {segment: (as_of, status) for segment, as_of, status in rows}


def _target(destination: str, segment: Segment, target: Target, routing: Routing) -> str:
    """What acknowledged state of this unit belongs to: the account/workspace and the audience object in it."""
    if target.is_sandbox:
        return SANDBOX
    identity = target.identity
    if destination == "customerio":
        manual = routing.customerio_segments.get(segment.name)
        return identity + (f" / segment {manual}" if manual else "")
    if destination == "meta":
        return f"{identity} / audience {routing.require(segment, 'meta')}"
    account = routing.google_operating_account
    return (
        f"{identity} / {account.get('accountType')}:{account.get('accountId')} / "
        f"user_list {routing.require(segment, 'google')}"
    )


def plan_units(
    segments: list[Segment],
    cadence: str,
    as_of,
    status: dict[str, tuple],
    suppression: SuppressionStatus,
    targets: dict[str, Callable[[Segment], str]],
) -> list[SyncUnit]:
    """What this run reconciles. Its own cadence's segments go to every destination from this partition; every
    other target segment's ad audiences are reconciled too, so suppression never waits for another cadence.

    Ad destinations are refused outright while current suppression cannot be established; a segment that cannot be
    fully synced (never computed, stale, held by its guard) still has suppressed people removed from its ad
    audiences."""
    units = []
    for segment in (s for s in segments if s.purpose == "target"):
        latest, guard = status.get(segment.name, (None, None))
        own = segment.cadence == cadence
        for destination in segment.destinations:
            ad = destination in AD_DESTINATIONS
            if destination not in targets or (not own and not ad):
                continue
            target = targets[destination](segment)
            held = None
            if latest is None:
                held = "never computed"
            elif own and latest != as_of:
                held = "this partition is not its latest computed partition"
            elif guard == "blocked":
                held = "held by its size guard or a failing data test"
            if ad:
                problem = suppression.covers(None if held else latest)
                if problem:
                    units.append(SyncUnit(segment, destination, target, None,
                                          f"refused: cannot establish current suppression — {problem}"))  # fmt: skip
                elif held:
                    units.append(SyncUnit(segment, destination, target, "suppress_only", f"{held}; "
                                          "suppressed people removed only"))  # fmt: skip
                else:
                    units.append(SyncUnit(segment, destination, target, "full"))
            else:
                units.append(SyncUnit(segment, destination, target, None if held else "full", held))
    return units


def _unit_targets(resolved: dict[str, Target], routing: Routing) -> dict[str, Callable[[Segment], str]]:
    """destination → (segment → the target its acknowledged state is kept under)."""
    return {
        d: functools.partial(_target, d, target=target, routing=routing) for d, target in resolved.items()
    }


def next_units(con, segments: list[Segment], cadence: str) -> list[SyncUnit]:
    """What the cadence's next sync would reconcile, targets resolved from the environment (no network): for tools
    that inspect a plan without running it (the fault suite, previews). Its own segments count as current."""
    resolved = {t.system: t for t in resolve(routed_destinations(segments))}
    targets = _unit_targets(resolved, load_routing())
    ensure_segment_tables(con)
    status = _segment_status(con)
    as_of = max((a for name, (a, _) in status.items() for s in segments if s.name == name and s.cadence == cadence),
                default=None)  # fmt: skip
    return plan_units(segments, cadence, as_of, status, suppression_status(con), targets)


def _metadata(reports: list[DestinationReport], dry_run: bool, blocked: set[str], suppression) -> dict:
    metadata: dict = {"dry_run": dry_run, "blocked_segments": len(blocked)}
    if suppression.as_of is not None:
        metadata["suppression_as_of"] = suppression.as_of.isoformat()
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
        + (f"**Suppression not established:** {suppression.problem}\n\n" if suppression.problem else "")
        + ("**Dry run: nothing sent.**\n\n" if dry_run else "")
        + header + "|---|---|---|---|---|---|---|---|\n" + rows
    )  # fmt: skip
    return metadata


STATE_CHECKS = {
    "do_not_retarget_disjoint_from_ad_audiences": "No acknowledged ad-audience member (sync.destination_state) is "
    "at a currently suppressed account; fails when current suppression cannot be established",
    "holdout_never_outbound": "No acknowledged member of a synced segment is in its holdout",
    "destination_state_unique": "sync.destination_state has one row per (target, segment, destination, person)",
}


def build_sync_asset(cadence: str, segments: list[Segment]) -> dg.AssetsDefinition:
    key = dg.AssetKey(["sync", f"activation_{cadence}"])
    used = routed_destinations(segments)

    @partitioned_asset(
        key=key,
        cadence=cadence,
        deps=[dg.AssetKey(["segments", f"members_{cadence}"])],
        group_name=GROUP,
        kinds={"customerio", "meta", "google", "duckdb"},
        pool="duckdb",
        description=(
            f"Pushes only what changed in the {cadence} segments since the last acknowledged sync to Customer.io, "
            "Meta and Google (sync.ledger, sync.destination_state), removes currently suppressed people from every "
            "segment's ad audiences, and exports the partition as Parquet. Over a partition range only the newest "
            "partition is synced."
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
            *[
                dg.AssetCheckSpec(name, asset=key, blocking=True, description=text)
                for name, text in STATE_CHECKS.items()
            ],
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
        # Destinations hold one current state: only the newest partition of a range can be synced.
        partitions = partitions_of_run(context, cadence)
        partition_key, as_of = partitions[-1][0], partitions[-1][1].replace(tzinfo=None)
        if len(partitions) > 1:
            context.log.info(
                f"{len(partitions) - 1} older partition(s) of the range ({partitions[0][0]}…{partitions[-2][0]}) "
                f"are never synced; syncing {partition_key}"
            )
        routing = load_routing()
        connections = {
            "customerio": customerio.connection(),
            "meta": meta.connection(),
            "google": google.connection(),
        }
        with duckdb.connect() as con:
            verify_bindings(
                con, [connections[d].target for d in used], duckdb.resolved_path(), context.log.info
            )
            ensure_segment_tables(con)
            ensure_tables(con)
            status = _segment_status(con)
            suppression = suppression_status(con)
        routing = with_sandbox_objects(routing, connections["customerio"], connections["meta"])
        targets = _unit_targets({d: connections[d].target for d in used}, routing)
        units = plan_units(segments, cadence, as_of, status, suppression, targets)
        for unit in units:
            if unit.skipped:
                log = (
                    context.log.warning
                    if unit.mode is None and unit.segment.cadence == cadence
                    else context.log.info
                )
                log(f"{unit.segment.name} → {unit.destination}: {unit.skipped}")
        blocked = {s for s, (a, st) in status.items() if st == "blocked" and a == as_of}
        adapters = {
            "customerio": CustomerIoAdapter(connections["customerio"].client, routing),
            "meta": MetaAdapter(connections["meta"].client, routing),
            "google": GoogleAdapter(connections["google"].client, routing),
        }
        ctx = SyncContext(f"{context.run.run_id}:{partition_key}", cadence, partition_key, as_of)
        reports = run_sync(duckdb.connect, units, adapters, ctx, dry_run=dry_run, log=context.log.info)
        exported = {}
        with duckdb.connect() as con:
            state = check_state(con, units, suppression.problem is None)
            if not dry_run:
                exported = warehouse_export.export_partition(
                    con, warehouse_export.export_dir(), cadence, partition_key
                )
            for r in reports:
                if r.destination == "meta" and r.removes:
                    size = con.execute(
                        "SELECT count(*) FROM sync.destination_state WHERE segment = ? AND destination = 'meta' "
                        "AND target = ?",
                        [r.segment, r.target],
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
            if r.mode == "full" and r.people and 100 * r.with_identifier / r.people < threshold
        ]
        metadata = _metadata(reports, dry_run, blocked, suppression) | {
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
                *_state_check_results(state, suppression),
            ],
        )

    return _asset


def _state_check_results(state: StateChecks, suppression: SuppressionStatus) -> list[dg.AssetCheckResult]:
    suppressed = state.suppressed_in_ads
    return [
        dg.AssetCheckResult(
            check_name="do_not_retarget_disjoint_from_ad_audiences",
            passed=suppressed == 0,
            metadata={
                "suppressed_people_acknowledged_in_ad_audiences": -1 if suppressed is None else suppressed
            },
            description=(
                f"cannot establish current suppression: {suppression.problem}"
                if suppressed is None
                else f"{suppressed} acknowledged ad-audience row(s) at currently suppressed accounts"
            ),
        ),
        dg.AssetCheckResult(
            check_name="holdout_never_outbound",
            passed=state.holdout_outbound == 0,
            metadata={"holdout_people_acknowledged": state.holdout_outbound},
        ),
        dg.AssetCheckResult(
            check_name="destination_state_unique",
            passed=state.duplicate_keys == 0,
            metadata={"duplicate_keys": state.duplicate_keys},
        ),
    ]
