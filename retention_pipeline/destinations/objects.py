"""The objects segments sync into — audiences, user lists, manual segments — and their lookalikes.

An id in destinations.yaml wins. Otherwise the id recorded for this account in `sync.destination_objects` is
reused, and otherwise a destination whose API can create one does so (under the segment's neutral display name,
never the segment's own name) and the id is recorded before anything is sent to it — so a crash after creation
reuses the object instead of creating a second one. In-process sandboxes start empty every run, so there every
object is created afresh and its row replaced.

After a sync, what the platform reports (matched size, processing status) is read back into
`sync.coverage.destination_matched`; a declared lookalike is created once its seed holds the vendor's minimum.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb

from retention_pipeline.destinations import registry
from retention_pipeline.destinations.plugin import Connection, ReadBack
from retention_pipeline.destinations.routing import Routing
from retention_pipeline.redact import redact
from retention_pipeline.warehouse import transaction

AUDIENCE, LOOKALIKE = "audience", "lookalike"

DDL = """
CREATE SCHEMA IF NOT EXISTS sync;
CREATE TABLE IF NOT EXISTS sync.destination_objects (
    destination VARCHAR NOT NULL, account VARCHAR NOT NULL, segment VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    object_id VARCHAR NOT NULL, name VARCHAR NOT NULL, seed_object_id VARCHAR, spec JSON,
    created_at TIMESTAMP NOT NULL, origin VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS sync.destination_readback (
    destination VARCHAR NOT NULL, account VARCHAR NOT NULL, segment VARCHAR NOT NULL, object_id VARCHAR NOT NULL,
    acknowledged INTEGER, matched INTEGER, status VARCHAR, note VARCHAR, read_at TIMESTAMP NOT NULL
);
"""


@dataclass
class ObjectReport:
    """What happened to one destination's objects in this run (for logs and asset metadata)."""

    created: list[str] = field(default_factory=list)  # "segment → id"
    failed: list[str] = field(default_factory=list)
    lookalikes: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)  # segment → name of an object `send` will create


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def recorded(con: duckdb.DuckDBPyConnection, destination: str, account: str, kind: str = AUDIENCE) -> dict:
    """segment → the object id recorded for this destination account."""
    rows = con.execute(
        """SELECT segment, arg_max(object_id, created_at) FROM sync.destination_objects
        WHERE destination = ? AND account = ? AND kind = ? GROUP BY segment""",
        [destination, account, kind],
    ).fetchall()
    return dict(rows)


def _record(con, destination, account, segment, kind, object_id, name, origin, seed=None, spec=None) -> None:
    with transaction(con):
        con.execute(
            "DELETE FROM sync.destination_objects WHERE destination = ? AND account = ? AND segment = ? AND kind = ?",
            [destination, account, segment, kind],
        )
        con.execute(
            "INSERT INTO sync.destination_objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [destination, account, segment, kind, object_id, name, seed, None if spec is None else
             json.dumps(spec), _now(), origin],
        )  # fmt: skip


def resolve_objects(
    con: duckdb.DuckDBPyConnection,
    destination: str,
    connection: Connection,
    routing: Routing,
    segments: dict[str, bool],
    *,
    log: Callable[[str], None],
) -> tuple[dict[str, str], ObjectReport]:
    """segment → object id for `segments` (segment → whether its object may be created now) in `destination`; a
    missing one is created when allowed and the API can. A segment left out of the result has no object (yet)."""
    spec = registry.spec(destination)
    report = ObjectReport()
    account = connection.target.identity
    given = routing.objects(destination)
    ephemeral = connection.sandbox is not None  # the in-process sandbox starts empty every run
    known = {} if ephemeral else recorded(con, destination, account)
    manager = registry.plugin(destination).adapter(connection, routing.section(destination), {})
    objects: dict[str, str] = {}
    for segment, create in sorted(segments.items()):
        if segment in given and not (ephemeral and spec.creates_objects):
            objects[segment] = given[segment]
            continue
        if segment in known:
            objects[segment] = known[segment]
            continue
        name = routing.display_name(segment)
        if spec.creates_objects and getattr(manager, "creates_on_first_add", False):
            report.pending[segment] = name  # the adapter's send creates it from the first adds, if any
            continue
        if not (create and spec.creates_objects and hasattr(manager, "create_object")):
            continue
        try:
            object_id = str(manager.create_object(name, "retention_pipeline segment audience"))
        except Exception as error:  # noqa: BLE001 — reported per segment; the other segments still sync
            report.failed.append(f"{segment}: {redact(str(error))[:200]}")
            log(
                f"{segment} → {destination}: could not create its {spec.objects_key[:-1]}: {redact(str(error))}"
            )
            continue
        _record(
            con,
            destination,
            account,
            segment,
            AUDIENCE,
            object_id,
            name,
            "sandbox" if ephemeral else "created",
        )
        objects[segment] = object_id
        report.created.append(f"{segment} → {object_id}")
        log(f"{segment} → {destination}: created {spec.objects_key[:-1]} {object_id} named {name!r}")
    return objects, report


def record_created(
    con: duckdb.DuckDBPyConnection,
    destination: str,
    connection: Connection,
    segment: str,
    object_id: str,
    report: ObjectReport,
    log: Callable[[str], None],
) -> None:
    """Record an object an adapter created while sending (before that send's acknowledgements are written)."""
    origin = "sandbox" if connection.sandbox is not None else "created"
    name = report.pending.get(segment, segment)
    _record(con, destination, connection.target.identity, segment, AUDIENCE, object_id, name, origin)
    report.created.append(f"{segment} → {object_id}")
    log(f"{segment} → {destination}: created {registry.spec(destination).objects_key[:-1]} {object_id} "
        f"named {name!r}")  # fmt: skip


def read_back(
    con: duckdb.DuckDBPyConnection,
    destination: str,
    connection: Connection,
    adapter,
    objects: dict[str, str],
    sizes: dict[str, int],
    as_of: datetime,
    log: Callable[[str], None],
) -> dict[str, ReadBack]:
    """What the platform reports for each synced object, into sync.destination_readback and
    sync.coverage.destination_matched. A failing read is logged and skipped: it never fails the sync."""
    if not hasattr(adapter, "read_back"):
        return {}
    account = connection.target.identity
    results: dict[str, ReadBack] = {}
    for segment, object_id in sorted(objects.items()):
        try:
            result = adapter.read_back(object_id)
        except Exception as error:  # noqa: BLE001
            log(f"{segment} → {destination}: could not read back {object_id}: {redact(str(error))[:200]}")
            continue
        if connection.sandbox is not None:
            # The embedded sandbox starts empty every run: it only holds what this run sent.
            result = ReadBack(
                result.matched,
                result.status,
                "embedded sandbox (this run's sends only); " + (result.note or ""),
            )
        results[segment] = result
        acknowledged = sizes.get(segment, 0)
        con.execute(
            "INSERT INTO sync.destination_readback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [destination, account, segment, object_id, acknowledged, result.matched, result.status, result.note,
             _now()],
        )  # fmt: skip
        con.execute(
            "UPDATE sync.coverage SET destination_matched = ? WHERE segment = ? AND destination = ? AND as_of = ?",
            [result.matched, segment, destination, as_of.replace(tzinfo=None)],
        )
    return results


def ensure_lookalikes(
    con: duckdb.DuckDBPyConnection,
    destination: str,
    connection: Connection,
    adapter,
    routing: Routing,
    objects: dict[str, str],
    seed_sizes: dict[str, int],
    log: Callable[[str], None],
) -> ObjectReport:
    """Create each declared lookalike once, when its seed audience holds at least the vendor's minimum."""
    report = ObjectReport()
    spec = registry.spec(destination)
    declared = routing.lookalikes(destination)
    if not declared:
        return report
    if spec.lookalike_min_seed is None or not hasattr(adapter, "create_lookalike"):
        log(
            f"{destination}: lookalikes declared in {routing.file} but {spec.label} does not support them here"
        )
        return report
    account = connection.target.identity
    existing = {} if connection.sandbox is not None else recorded(con, destination, account, LOOKALIKE)
    for segment, options in sorted(declared.items()):
        if segment in existing or segment not in objects:
            continue
        size = seed_sizes.get(segment, 0)
        if size < spec.lookalike_min_seed:
            report.waiting.append(f"{segment}: seed {size} < {spec.lookalike_min_seed}")
            log(
                f"{segment} → {destination}: lookalike waits for its seed ({size} < {spec.lookalike_min_seed})"
            )
            continue
        name = f"{routing.display_name(segment)} lookalike"
        try:
            object_id = str(adapter.create_lookalike(objects[segment], name, options))
        except Exception as error:  # noqa: BLE001
            report.failed.append(f"{segment} lookalike: {redact(str(error))[:200]}")
            log(f"{segment} → {destination}: lookalike not created: {redact(str(error))[:200]}")
            continue
        origin = "sandbox" if connection.sandbox is not None else "created"
        _record(
            con, destination, account, segment, LOOKALIKE, object_id, name, origin, objects[segment], options
        )
        report.lookalikes.append(f"{segment} → {object_id}")
        log(f"{segment} → {destination}: lookalike {object_id} created from {objects[segment]}")
    return report
