"""What a destination plug-in provides, and what the sync engine gives it.

A destination is one folder, `retention_pipeline/destinations/<name>/`, whose `__init__.py` defines `PLUGIN`, plus
one `DestinationSpec` line in `registry.py`. The engine, the routing view, the measurement SQL and the checks only
ever see these types and the registry's properties — never a vendor name.

- `payload_sql`: a DuckDB expression that is the JSON payload sent for one person (NULL when they have no usable
  identifier). It may use `p.email` (trimmed, lowercased), `p.phone` (E.164 with '+'), the routed row `r` (`tier`,
  `reason`, `customer_id`, `person_id`, `segment`) and the person's home-account features `f` (a row of
  analytics.customer_features), and the identity macros (`destinations/identity.py`). Raw email/phone must never
  appear in an ad platform's payload: hash them in this SQL.
- `target(**overrides)`: which account the environment selects (no network), as an `environment.Target`.
- `resource()`: the Dagster resource, whose `connection()` opens the real or sandbox transport.
- `adapter(connection, section, objects)`: turns planned changes into requests; `section` is the vendor's part of
  destinations.yaml and `objects` maps each segment to the id of its object (audience, list, manual segment).
- `state_target(identity, object_id, section)`: what acknowledged state belongs to — the account and the object.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from retention_pipeline.environment import Target
    from retention_pipeline.segments.project import Segment

AD = "ad"  # an ad platform: Do Not Retarget suppression and marketing consent apply; payloads are hashed
MESSAGING = (
    "messaging"  # a messaging tool: the customer's own relationship; suppression is its own journeys' job
)


@dataclass(frozen=True)
class DestinationSpec:
    """One registry line: the properties the engine, the routing view and the docs read."""

    name: str  # the routing key in segment headers and destinations.yaml
    label: str
    kind: str  # AD or MESSAGING
    identifiers: tuple[str, ...]  # what people are matched on, e.g. ("email", "phone")
    per_request_limit: int  # rows (or ids) per request the vendor documents (or we chose where it does not)
    supports_removal: bool
    consent_required: bool  # only people whose marketing consent is granted on every contact row are sent
    suppression_applies: bool  # people at a Do Not Retarget account are never sent and are removed
    objects_key: str  # destinations.yaml `<name>.<objects_key>.<segment>: <id>`
    creates_objects: bool  # the API can create the object when destinations.yaml has no id
    object_required: bool  # a target segment routed here must resolve an object id (given or created)
    package: str  # the vendor folder's module, which defines PLUGIN
    env_vars: tuple[str, ...] = ()  # the variables that select the real service (docs, messages)
    lookalike_min_seed: int | None = None  # None: no lookalike support

    @property
    def is_ad(self) -> bool:
        return self.kind == AD


@dataclass
class Connection:
    """One run's transport to a destination: its client, real or sandbox, and the target it reaches."""

    client: Any
    mode: str  # "sandbox" or "api"
    base_url: str
    target: Target
    sandbox: Any = None  # the in-process sandbox (only in sandbox mode), for tests and the demo


@dataclass(frozen=True)
class Change:
    """One planned row for one destination: add, remove or update (the old payload for removes)."""

    member_key: str
    operation: str
    payload: dict
    payload_hash: str
    previous_payload: dict | None = None
    customer_id: str | None = None  # the account the membership is attributed to (the identity rule)


@dataclass
class RequestResult:
    """One HTTP request a destination adapter sent, as the ledger records it."""

    operation: str
    items: int
    ok: bool
    http_status: int | None = None
    error: str | None = None
    detail: dict = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class ItemResult:
    member_key: str
    operation: str
    ok: bool
    reason: str | None = None
    request_id: str | None = None


@dataclass
class SendResult:
    requests: list[RequestResult] = field(default_factory=list)
    items: list[ItemResult] = field(default_factory=list)


@dataclass(frozen=True)
class SyncContext:
    sync_id: str
    cadence: str
    partition_key: str
    as_of: datetime


@dataclass(frozen=True)
class ReadBack:
    """What the platform reports about an object after a sync: its matched size where the API exposes one."""

    matched: int | None  # None: not exposed (or not yet computed) by the API
    status: str | None = None  # the vendor's processing status, e.g. READY / PROCESSING / TOO_SMALL
    note: str | None = None  # why `matched` is missing, or the vendor's documented delay


class DestinationAdapter(Protocol):
    """A destination as the engine sees it."""

    name: str
    per_request_limit: int

    def expected_requests(self, changes: list[Change]) -> int:
        """⌈changes / the destination's per-request limit⌉, per kind of call."""

    def send(self, segment: Segment, changes: list[Change], context: SyncContext) -> SendResult: ...


class ObjectManager(Protocol):
    """Optional adapter methods: create the segment's object, read back its matched size, seed a lookalike.

    An adapter that cannot do one of these simply lacks the method (the engine checks with `hasattr`)."""

    def create_object(self, name: str, description: str) -> str:
        """Create the audience / list / manual segment named `name` (vendor-visible, neutral); return its id."""

    def read_back(self, object_id: str) -> ReadBack: ...

    def create_lookalike(self, seed_object_id: str, name: str, spec: dict) -> str:
        """Create a lookalike seeded by `seed_object_id`; `spec` is destinations.yaml's lookalike entry."""


@dataclass(frozen=True)
class DestinationPlugin:
    """What a vendor folder exports as PLUGIN."""

    target: Callable[..., Target]
    resource: Callable[[], Any]  # a dg.ConfigurableResource instance whose connection() returns a Connection
    adapter: Callable[[Connection, dict, dict[str, str]], DestinationAdapter]
    payload_sql: str
    state_target: Callable[[str, str | None, dict], str]
    # Problems with the vendor's destinations.yaml section that no sync could get past (e.g. a missing account).
    check_section: Callable[[dict], list[str]] | None = None
