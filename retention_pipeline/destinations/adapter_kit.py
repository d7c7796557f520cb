"""What adapters share: per-item outcomes from per-request answers, and the remove-then-add audience adapter."""

from __future__ import annotations

import hashlib
import math

from retention_pipeline.destinations.plugin import Change, ItemResult, SendResult, SyncContext
from retention_pipeline.segments.project import Segment


def session_id(*parts: object) -> int:
    """A positive int64 per (sync, segment, operation): deterministic, so a retried upload reuses its session."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**62) + 1


def outcomes(changes: list[Change], ok: list[bool], reasons: list[str | None], request_ids: list[str | None]):
    return [
        ItemResult(c.member_key, c.operation, good, None if good else reason, request_id)
        for c, good, reason, request_id in zip(changes, ok, reasons, request_ids, strict=True)
    ]


class AudienceAdapter:
    """Shared by the ad platforms: removes (and the old side of updates) in one call, adds in another.

    A subclass sets `name` and `per_request_limit` and implements `_call`, which yields, per request it sent,
    (start, stop, RequestResult, {offset: reason} of rows the vendor refused inside an accepted request)."""

    name = ""
    per_request_limit = 10_000

    def expected_requests(self, changes: list[Change]) -> int:
        adds = sum(c.operation in ("add", "update") for c in changes)
        removes = sum(c.operation in ("remove", "update") for c in changes)
        return math.ceil(adds / self.per_request_limit) + math.ceil(removes / self.per_request_limit)

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
        report.items = outcomes(changes, ok, reasons, request_ids)
        return report

    def _call(self, segment: Segment, action: str, payloads: list[dict], context: SyncContext):
        raise NotImplementedError
