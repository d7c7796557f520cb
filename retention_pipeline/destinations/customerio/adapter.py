"""Customer.io: person attributes and segment_entered / segment_exited events (Track v2 batch) and, when the segment
has one, a manual segment kept in sync with add_customers / remove_customers."""

from __future__ import annotations

import math
from datetime import UTC

from retention_pipeline.destinations.adapter_kit import outcomes
from retention_pipeline.destinations.customerio.client import CustomerIoClient, make_event_id
from retention_pipeline.destinations.plugin import Change, ReadBack, RequestResult, SendResult, SyncContext
from retention_pipeline.segments.project import Segment

ATTRIBUTE_PREFIX = "rp_"
CUSTOMERIO_SEGMENT_IDS = 1000
CUSTOMERIO_BATCH_BYTES = 500_000


class CustomerIoAdapter:
    """Attributes + segment_entered/exited events (Track v2 batch) and, when mapped, a manual segment."""

    name = "customerio"
    per_request_limit = CUSTOMERIO_SEGMENT_IDS

    def __init__(
        self, client: CustomerIoClient, section: dict | None = None, objects: dict[str, str] | None = None
    ):
        self.client = client
        self.segment_ids = dict(objects or {})

    # --- objects: manual segments (App API; needs CUSTOMERIO_APP_API_KEY) -----------------------------------
    def create_object(self, name: str, description: str) -> str:
        return str(self.client.create_segment(name, description)["id"])

    def read_back(self, object_id: str) -> ReadBack:
        return ReadBack(self.client.segment_customer_count(object_id), note="manual segment customer_count")

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
        report.items = outcomes(changes, ok, reasons, request_ids)
        return report
