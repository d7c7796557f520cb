"""Destination adapters: turn planned changes into each API's calls and its answers into per-item outcomes.

Each adapter is small and holds no state between runs; the engine (sync.py) owns planning, ledger and state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import UTC

from retention_pipeline.destinations.customerio import CustomerIoClient, make_event_id
from retention_pipeline.destinations.google import GoogleDataManagerClient
from retention_pipeline.destinations.meta import MetaClient
from retention_pipeline.destinations.routing import Routing
from retention_pipeline.destinations.sync import Change, ItemResult, RequestResult, SendResult, SyncContext
from retention_pipeline.segments.project import Segment

ATTRIBUTE_PREFIX = "rp_"
CUSTOMERIO_SEGMENT_IDS = 1000
CUSTOMERIO_BATCH_BYTES = 500_000
AD_ROWS = 10_000


def _session_id(*parts: object) -> int:
    """A positive int64 per (sync, segment, operation): Meta wants a new session per upload."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**62) + 1


def _outcomes(
    changes: list[Change], ok: list[bool], reasons: list[str | None], request_ids: list[str | None]
):
    return [
        ItemResult(c.member_key, c.operation, good, None if good else reason, request_id)
        for c, good, reason, request_id in zip(changes, ok, reasons, request_ids, strict=True)
    ]


class CustomerIoAdapter:
    """Attributes + segment_entered/exited events (Track v2 batch) and, when mapped, a manual segment."""

    name = "customerio"
    per_request_limit = CUSTOMERIO_SEGMENT_IDS

    def __init__(self, client: CustomerIoClient, routing: Routing, segment_ids: dict[str, str] | None = None):
        self.client = client
        self.segment_ids = dict(routing.customerio_segments if segment_ids is None else segment_ids)

    def expected_requests(self, changes: list[Change]) -> int:
        size = sum(len(str(op)) for c in changes for op in self._ops(c, None))
        batches = math.ceil(size / CUSTOMERIO_BATCH_BYTES) if changes else 0
        adds = sum(c.operation == "add" for c in changes)
        removes = sum(c.operation == "remove" for c in changes)
        mapped = 1 if changes and self._mapped(changes) else 0
        return batches + mapped * (
            math.ceil(adds / CUSTOMERIO_SEGMENT_IDS) + math.ceil(removes / CUSTOMERIO_SEGMENT_IDS)
        )

    def _mapped(self, changes: list[Change]) -> bool:
        return bool(self.segment_ids)

    def _ops(self, change: Change, context: SyncContext | None, segment: str = "") -> list[dict]:
        identifiers = {"id": change.member_key}
        payload = change.payload
        prefix = f"{ATTRIBUTE_PREFIX}{segment}"
        if change.operation == "remove":
            attributes = {
                f"{prefix}_tier": None,
                f"{prefix}_reason": None,
                f"{prefix}_since": None,
                f"{prefix}_account": None,
            }
        else:
            attributes = {
                f"{prefix}_tier": payload.get("tier"),
                f"{prefix}_reason": payload.get("reason"),
                f"{prefix}_account": payload.get("account"),
                **{f"{ATTRIBUTE_PREFIX}{k}": v for k, v in (payload.get("features") or {}).items()},
            }
            if change.operation == "add" and context is not None:
                attributes[f"{prefix}_since"] = int(context.as_of.replace(tzinfo=UTC).timestamp())
            if payload.get("email"):
                attributes["email"] = payload["email"]
        ops = [{"type": "person", "identifiers": identifiers, "action": "identify", "attributes": attributes}]
        if change.operation in ("add", "remove") and context is not None:
            name = "segment_entered" if change.operation == "add" else "segment_exited"
            timestamp = int(context.as_of.replace(tzinfo=UTC).timestamp())
            ops.append(
                {
                    "type": "person",
                    "identifiers": identifiers,
                    "action": "event",
                    "name": name,
                    # Same segment, person, change and partition → same id, so a retried send is dropped.
                    "id": make_event_id(segment, change.member_key, name, context.partition_key),
                    "timestamp": timestamp,
                    "attributes": {
                        "segment": segment,
                        "tier": payload.get("tier"),
                        "reason": payload.get("reason"),
                    },
                }
            )
        return ops

    def send(self, segment: Segment, changes: list[Change], context: SyncContext) -> SendResult:
        ops, owner = [], []
        for position, change in enumerate(changes):
            for op in self._ops(change, context, segment.name):
                ops.append(op)
                owner.append(position)
        results = self.client.batch(ops)
        ok = [True] * len(changes)
        reasons: list[str | None] = [None] * len(changes)
        request_ids: list[str | None] = [None] * len(changes)
        requests: dict[int, RequestResult] = {}
        for result, position in zip(results, owner, strict=True):
            if result.request is not None:
                request = requests.setdefault(
                    result.request,
                    RequestResult("batch", 0, ok=result.status in (200, 207), http_status=result.status),
                )
                request.items += 1
                request_ids[position] = request.request_id
                if not result.ok:
                    request.detail["failed_ops"] = request.detail.get("failed_ops", 0) + 1
                    request.error = request.error or result.message or result.reason
            if not result.ok:
                ok[position] = False
                reasons[position] = result.message or result.reason or f"HTTP {result.status}"
        report = SendResult(requests=list(requests.values()))
        manual = self.segment_ids.get(segment.name)
        if manual is not None:
            for action, call in (("add", self.client.segment_add), ("remove", self.client.segment_remove)):
                positions = [i for i, c in enumerate(changes) if c.operation == action and ok[i]]
                if not positions:
                    continue
                for outcome in call(manual, [changes[i].member_key for i in positions]):
                    request = RequestResult(
                        f"segment_{action}", outcome.stop - outcome.start, ok=outcome.ok, http_status=outcome.status,
                        error=outcome.message or outcome.reason, detail={"segment_id": str(manual)},
                    )  # fmt: skip
                    report.requests.append(request)
                    for i in positions[outcome.start : outcome.stop]:
                        request_ids[i] = request_ids[i] or request.request_id
                        if not outcome.ok:
                            ok[i], reasons[i] = False, request.error or f"HTTP {outcome.status}"
        report.items = _outcomes(changes, ok, reasons, request_ids)
        return report


class _AdAdapter:
    """Shared by Meta and Google: adds (and the new side of updates) in one call, removes in another."""

    name = ""
    per_request_limit = AD_ROWS

    def expected_requests(self, changes: list[Change]) -> int:
        adds = sum(c.operation in ("add", "update") for c in changes)
        removes = sum(c.operation in ("remove", "update") for c in changes)
        return math.ceil(adds / AD_ROWS) + math.ceil(removes / AD_ROWS)

    def send(self, segment: Segment, changes: list[Change], context: SyncContext) -> SendResult:
        report = SendResult()
        ok = [True] * len(changes)
        reasons: list[str | None] = [None] * len(changes)
        request_ids: list[str | None] = [None] * len(changes)
        for action in ("remove", "add"):  # an update removes the old identifiers before adding the new ones
            positions = [
                i
                for i, c in enumerate(changes)
                if c.operation == action or (c.operation == "update" and ok[i])
            ]
            if not positions:
                continue
            payloads = [
                (changes[i].previous_payload or changes[i].payload)
                if action == "remove"
                else changes[i].payload
                for i in positions
            ]
            for start, stop, request, invalid in self._call(segment, action, payloads, context):
                report.requests.append(request)
                for offset in range(start, stop):
                    i = positions[offset]
                    request_ids[i] = request.request_id
                    if not request.ok:
                        ok[i], reasons[i] = False, request.error or f"HTTP {request.http_status}"
                    elif offset in invalid:
                        ok[i], reasons[i] = False, invalid[offset]
        report.items = _outcomes(changes, ok, reasons, request_ids)
        return report

    def _call(self, segment: Segment, action: str, payloads: list[dict], context: SyncContext):
        raise NotImplementedError


class MetaAdapter(_AdAdapter):
    """Meta Custom Audiences: multi-key (EMAIL, PHONE) SHA-256 rows, one session per upload."""

    name = "meta"
    SCHEMA = ["EMAIL", "PHONE"]

    def __init__(self, client: MetaClient, routing: Routing):
        self.client, self.routing = client, routing

    def _call(self, segment, action, payloads, context):
        audience = self.routing.require(segment, "meta")
        rows = [[p.get(k) or "" for k in self.SCHEMA] for p in payloads]
        call = self.client.add_users if action == "add" else self.client.remove_users
        session = _session_id(context.sync_id, segment.name, action)
        for result in call(audience, self.SCHEMA, rows, session):
            request = RequestResult(
                action, result.stop - result.start, ok=result.ok, http_status=result.status,
                error=result.message or result.reason,
                detail={"audience_id": audience, "session_id": session, "batch_seq": result.batch_seq,
                        "num_received": result.num_received, "num_invalid_entries": result.num_invalid_entries},
            )  # fmt: skip
            samples = result.invalid_entry_samples or {}
            invalid = {
                offset: str(samples.get(rows[offset][0]) or samples.get(rows[offset][1]))
                for offset in range(result.start, result.stop)
                if rows[offset][0] in samples or rows[offset][1] in samples
            }
            yield result.start, result.stop, request, invalid


class GoogleAdapter(_AdAdapter):
    """Google Data Manager: hashed email/phone per member, consent granted (only consenting people get here)."""

    name = "google"
    CONSENT = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}

    def __init__(self, client: GoogleDataManagerClient, routing: Routing):
        self.client, self.routing = client, routing

    def _call(self, segment, action, payloads, context):
        destination = {
            "operatingAccount": self.routing.google_operating_account,
            "productDestinationId": self.routing.require(segment, "google"),
        }
        members = [
            {"userData": {"userIdentifiers": [{k: v} for k, v in p.items() if v]}}
            | ({"consent": self.CONSENT} if action == "add" else {})
            for p in payloads
        ]
        call: Callable = self.client.ingest if action == "add" else self.client.remove
        for result in call([destination], members):
            request = RequestResult(
                action, result.stop - result.start, ok=result.ok, http_status=result.status,
                error=result.message or result.reason or result.error_status,
                detail={"google_request_id": result.request_id, "quota_limit": result.quota_limit},
            )  # fmt: skip
            yield result.start, result.stop, request, {}
