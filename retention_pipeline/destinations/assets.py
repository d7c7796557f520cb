"""One activation asset per cadence: push what changed in that cadence's segments to every destination."""

import dataclasses
from collections.abc import Callable

import dagster as dg

from retention_pipeline.catalog import Declaration
from retention_pipeline.config import ConfigError, env, env_parsed
from retention_pipeline.destinations import objects as destination_objects
from retention_pipeline.destinations import registry, warehouse_export
from retention_pipeline.destinations.plugin import Connection
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
from retention_pipeline.partitions import partitioned_asset, partitions_of_run
from retention_pipeline.segments.engine import SuppressionStatus, suppression_status
from retention_pipeline.segments.engine import ensure_tables as ensure_segment_tables
from retention_pipeline.segments.project import Segment, routed_destinations
from retention_pipeline.warehouse import DuckDBWarehouse

GROUP = "destinations"
SYNC_TABLES = (
    "sync.destination_state",
    "sync.ledger",
    "sync.ledger_items",
    "sync.coverage",
    "sync.last_plan",
    "sync.runs",
    "sync.destination_objects",
    "sync.destination_readback",
)


def declaration(cadence: str) -> Declaration:
    """What the cadence's sync asset writes (the catalog's entry for this stage)."""
    return Declaration(dg.AssetKey(["sync", f"activation_{cadence}"]), SYNC_TABLES, "destinations", cadence)


TRUE = {"1", "true", "yes", "on"}


class SyncConfig(dg.Config):
    """`dry_run: true` (or RETENTION_DRY_RUN=1) computes and shows the plan but sends nothing."""

    dry_run: bool = False


def dry_run_requested(config: SyncConfig) -> bool:
    raw = env("RETENTION_DRY_RUN").strip().lower()
    if raw not in TRUE | {"0", "false", "no", "off", ""}:
        raise ConfigError(f"RETENTION_DRY_RUN={raw!r} must be 1/true or 0/false.")
    return config.dry_run or raw in TRUE


def _segment_status(con) -> dict[str, tuple]:
    """segment → (latest as_of, its guard status) of every segment."""
    rows = con.execute(
        """SELECT segment, as_of, CASE WHEN bool_or(guard_status = 'blocked') THEN 'blocked' ELSE 'ok' END
        FROM segments.partitions AS p
        WHERE as_of = (SELECT max(as_of) FROM segments.partitions AS q WHERE q.segment = p.segment)
        GROUP BY segment, as_of"""
    ).fetchall()
    return {segment: (as_of, status) for segment, as_of, status in rows}


PENDING = "(created on first sync)"


def state_target(destination: str, target: Target, routing: Routing, object_id: str | None) -> str:
    """What acknowledged state of one unit belongs to: the account/workspace and the object in it."""
    if target.is_sandbox:
        return SANDBOX
    return registry.plugin(destination).state_target(target.identity, object_id, routing.section(destination))


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
            ad = registry.spec(destination).suppression_applies
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


def _unit_targets(
    resolved: dict[str, Target], routing: Routing, objects: dict[str, dict[str, str]]
) -> dict[str, Callable[[Segment], str]]:
    """destination → (segment → the target its acknowledged state is kept under)."""
    return {
        d: (lambda segment, d=d, target=target: state_target(
            d, target, routing, objects.get(d, {}).get(segment.name, PENDING)))
        for d, target in resolved.items()
    }  # fmt: skip


def next_units(con, segments: list[Segment], cadence: str) -> list[SyncUnit]:
    """What the cadence's next sync would reconcile, targets resolved from the environment (no network): for tools
    that inspect a plan without running it (the fault suite, previews). Its own segments count as current."""
    resolved = {t.system: t for t in resolve(routed_destinations(segments))}
    routing = load_routing()
    destination_objects.ensure_tables(con)
    objects = {
        d: routing.objects(d) | destination_objects.recorded(con, d, t.identity) for d, t in resolved.items()
    }
    targets = _unit_targets(resolved, routing, objects)
    ensure_segment_tables(con)
    status = _segment_status(con)
    as_of = max((a for name, (a, _) in status.items() for s in segments if s.name == name and s.cadence == cadence),
                default=None)  # fmt: skip
    return plan_units(segments, cadence, as_of, status, suppression_status(con), targets)


def resolve_all_objects(
    con, units: list[SyncUnit], connections: dict[str, Connection], routing: Routing, *, create: bool, log
) -> tuple[dict[str, dict[str, str]], dict[str, destination_objects.ObjectReport]]:
    """destination → segment → object id, for every unit this run may send (creating missing objects)."""
    # Only a segment synced from its own partition gets a new object; a suppression-only pass uses what exists
    # (nobody can be acknowledged in an object that does not exist).
    wanted: dict[str, dict[str, bool]] = {}
    for unit in units:
        if unit.mode is not None:
            creatable = wanted.setdefault(unit.destination, {})
            creatable[unit.segment.name] = creatable.get(unit.segment.name, False) or unit.mode == "full"
    objects, reports = {}, {}
    for destination, segments in wanted.items():
        # An in-process sandbox starts empty: its objects are created afresh so removals still go through.
        ephemeral = connections[destination].sandbox is not None
        objects[destination], reports[destination] = destination_objects.resolve_objects(
            con, destination, connections[destination], routing,
            {s: create and (own or ephemeral) for s, own in segments.items()}, log=log,
        )  # fmt: skip
    return objects, reports


def with_objects(
    units: list[SyncUnit],
    resolved: dict[str, Target],
    routing: Routing,
    objects: dict[str, dict[str, str]],
    dry_run: bool,
    pending: dict[str, set[str]] | None = None,
) -> list[SyncUnit]:
    """Units with their final targets; a unit whose destination needs an object it does not have is skipped."""
    final = []
    for unit in units:
        object_id = objects.get(unit.destination, {}).get(unit.segment.name)
        spec = registry.spec(unit.destination)
        target = state_target(unit.destination, resolved[unit.destination], routing, object_id or PENDING)
        waiting = unit.segment.name in (pending or {}).get(unit.destination, set())
        if (
            unit.mode is not None
            and object_id is None
            and spec.object_required
            and not dry_run
            and not waiting
        ):
            final.append(SyncUnit(unit.segment, unit.destination, target, None,
                                  f"no {spec.objects_key[:-1]} given, recorded or created (see the log)"))  # fmt: skip
        else:
            final.append(SyncUnit(unit.segment, unit.destination, target, unit.mode, unit.skipped))
    return final


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
    key = declaration(cadence).key
    used = routed_destinations(segments)

    @partitioned_asset(
        key=key,
        cadence=cadence,
        deps=[dg.AssetKey(["segments", f"members_{cadence}"])],
        group_name=GROUP,
        kinds={"duckdb"},
        required_resource_keys={"duckdb", *used},
        pool="duckdb",
        description=(
            f"Pushes only what changed in the {cadence} segments since the last acknowledged sync to "
            f"{', '.join(registry.spec(d).label for d in used) or 'no destination'} (sync.ledger, "
            "sync.destination_state), creates missing audiences, reads back match counts, removes currently "
            "suppressed people from every "
            "segment's ad audiences, and exports the partition as Parquet. Over a partition range only the newest "
            "partition is synced."
        ),
        metadata=declaration(cadence).metadata,
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
    def _asset(context: dg.AssetExecutionContext, config: SyncConfig) -> dg.MaterializeResult:
        duckdb: DuckDBWarehouse = context.resources.duckdb
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
        connections: dict[str, Connection] = {d: getattr(context.resources, d).connection() for d in used}
        resolved = {d: c.target for d, c in connections.items()}
        with duckdb.connect() as con:
            verify_bindings(con, list(resolved.values()), duckdb.resolved_path(), context.log.info)
            ensure_segment_tables(con)
            ensure_tables(con)
            destination_objects.ensure_tables(con)
            status = _segment_status(con)
            suppression = suppression_status(con)
            placeholder = {d: (lambda segment: PENDING) for d in used}
            units = plan_units(segments, cadence, as_of, status, suppression, placeholder)
            objects, object_reports = resolve_all_objects(
                con, units, connections, routing, create=not dry_run, log=context.log.info
            )
        # Objects that could not be created: their segments are skipped now, and the run fails at the end.
        creation_failures = [f"{f.split(':')[0]} → {d}: object not created ({f.split(': ', 1)[-1]})"
                             for d, r in object_reports.items() for f in r.failed]  # fmt: skip
        pending = {d: set(r.pending) for d, r in object_reports.items()}
        units = with_objects(units, resolved, routing, objects, dry_run, pending)
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
            d: registry.plugin(d).adapter(connections[d], routing.section(d), objects.get(d, {}))
            for d in used
        }
        for d, report in object_reports.items():
            if report.pending:
                adapters[d].pending = dict(report.pending)
        ctx = SyncContext(f"{context.run.run_id}:{partition_key}", cadence, partition_key, as_of)

        def on_sent(con, unit: SyncUnit, adapter, ctx: SyncContext) -> SyncUnit | None:
            """An object the send just created (a list created from its first adds): recorded, and this send's ledger items and
            acknowledgements re-keyed from the pending target to it, in one step before the outcome is written."""
            object_id = (getattr(adapter, "created", None) or {}).get(unit.segment.name)
            if object_id is None or objects.get(unit.destination, {}).get(unit.segment.name) == object_id:
                return None
            d = unit.destination
            objects.setdefault(d, {})[unit.segment.name] = object_id
            destination_objects.record_created(
                con, d, connections[d], unit.segment.name, object_id, object_reports[d], context.log.info
            )
            target = state_target(d, resolved[d], routing, object_id)
            con.execute(
                "UPDATE sync.ledger_items SET target = ? WHERE sync_id = ? AND segment = ? AND destination = ? "
                "AND target = ?",
                [target, ctx.sync_id, unit.segment.name, d, unit.target],
            )
            return dataclasses.replace(unit, target=target)

        reports = run_sync(
            duckdb.connect, units, adapters, ctx, dry_run=dry_run, log=context.log.info, on_sent=on_sent
        )
        exported, readbacks = {}, {}
        with duckdb.connect() as con:
            state = check_state(con, units, suppression.problem is None)
            if not dry_run:
                exported = warehouse_export.export_partition(
                    con, warehouse_export.export_dir(), cadence, partition_key
                )
                synced = {}
                for unit in units:
                    if unit.mode == "full" and unit.segment.name in objects.get(unit.destination, {}):
                        synced.setdefault(unit.destination, {})[unit.segment.name] = objects[unit.destination][
                            unit.segment.name]  # fmt: skip
                for destination, synced_objects in synced.items():
                    sizes = _acknowledged(con, destination, synced_objects)
                    readbacks[destination] = destination_objects.read_back(
                        con, destination, connections[destination], adapters[destination], synced_objects, sizes,
                        as_of, context.log.info,
                    )  # fmt: skip
                    lookalikes = destination_objects.ensure_lookalikes(
                        con, destination, connections[destination], adapters[destination], routing,
                        synced_objects, sizes, context.log.info,
                    )  # fmt: skip
                    object_reports.setdefault(destination, destination_objects.ObjectReport())
                    object_reports[destination].lookalikes += lookalikes.lookalikes
                    object_reports[destination].waiting += lookalikes.waiting
                    object_reports[destination].failed += lookalikes.failed
            for r in reports:
                floor = routing.min_audience_floor(r.destination)
                if floor is not None and r.removes:
                    size = con.execute(
                        "SELECT count(*) FROM sync.destination_state WHERE segment = ? AND destination = ? "
                        "AND target = ?",
                        [r.segment, r.destination, r.target],
                    ).fetchone()[0]
                    if size < floor:
                        r.warnings.append(f"audience at {size} < floor {floor}")
                        context.log.warning(
                            f"{r.segment} → {r.destination}: removals leave {size} people, below the floor of "
                            f"{floor} ({r.destination}.min_audience_floor)"
                        )
        low = [
            f"{r.segment}/{r.destination} {100 * r.with_identifier / r.people:.0f}%"
            for r in reports
            if r.mode == "full" and r.people and 100 * r.with_identifier / r.people < threshold
        ]
        metadata = (
            _metadata(reports, dry_run, blocked, suppression)
            | {f"exported_{k}": v for k, v in exported.items()}
            | _object_metadata(object_reports, readbacks)
        )
        outages = [r for r in reports if r.failed_requests]
        if outages or creation_failures:
            # Everything is in the ledger and nothing acknowledged is lost; the run must still not look green.
            raise dg.Failure(
                description="; ".join(
                    [f"{r.segment} → {r.destination}: {r.failed_requests} request(s) failed ({r.first_error})"
                     for r in outages] + creation_failures
                )
                + " — unacknowledged changes stay planned and are retried on the next run.",
                metadata=metadata,
            )  # fmt: skip
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


def _acknowledged(con, destination: str, synced: dict[str, str]) -> dict[str, int]:
    """segment → people acknowledged in `destination` (the seed size a lookalike needs)."""
    rows = con.execute(
        "SELECT segment, count(*) FROM sync.destination_state WHERE destination = ? GROUP BY segment",
        [destination],
    ).fetchall()
    return {segment: n for segment, n in rows if segment in synced}


def _object_metadata(reports: dict, readbacks: dict) -> dict:
    """Objects created, lookalikes, and what each platform reports back, per destination."""
    metadata: dict = {}
    for destination, report in sorted(reports.items()):
        for label, values in (("created", report.created), ("lookalikes", report.lookalikes),
                              ("lookalikes_waiting", report.waiting), ("object_errors", report.failed)):  # fmt: skip
            if values:
                metadata[f"{destination}/{label}"] = "; ".join(values)
    rows = [
        f"| {segment} | {destination} | {'—' if r.matched is None else r.matched} | {r.status or ''} | {r.note or ''} |"
        for destination, results in sorted(readbacks.items())
        for segment, r in sorted(results.items())
    ]
    if rows:
        metadata["match_readback"] = dg.MetadataValue.md(
            "| segment | destination | matched (platform) | status | note |\n|---|---|---|---|---|\n"
            + "\n".join(rows)
        )
    return metadata


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
