"""TikTok Partner audiences: one row per person, id_schema [EMAIL_SHA256, PHONE_SHA256], whole-request outcomes."""

from __future__ import annotations

from retention_pipeline.destinations.adapter_kit import AudienceAdapter
from retention_pipeline.destinations.plugin import ReadBack, RequestResult
from retention_pipeline.destinations.tiktok.client import ID_SCHEMA, TikTokClient

ACTIONS = {"add": "add", "remove": "delete"}  # TikTok's word for a removal (reference §1.3)
READ_BACK_NOTE = "TikTok updates size in 24-48 h"  # reference §1.6


class TikTokAdapter(AudienceAdapter):
    """TikTok custom audiences through the Segment API: removes and adds as `/segment/mapping/` requests.

    TikTok returns no per-row result (reference §1.3), so a request's outcome is every one of its rows' outcome."""

    name = "tiktok"
    SCHEMA = list(ID_SCHEMA)

    def __init__(
        self, client: TikTokClient, section: dict | None = None, objects: dict[str, str] | None = None
    ):
        self.client, self.objects = client, dict(objects or {})
        self.per_request_limit = client.batch_rows

    def _call(self, segment, action, payloads, context):
        audience = self.objects[segment.name]
        rows = [[p.get(k) or "" for k in self.SCHEMA] for p in payloads]
        for result in self.client.mapping(ACTIONS[action], audience, rows, self.SCHEMA):
            request = RequestResult(
                action, result.stop - result.start, ok=result.ok, http_status=result.status,
                error=result.message or result.reason,
                detail={"audience_id": audience, "tiktok_action": result.action, "code": result.code,
                        "tiktok_request_id": result.request_id, "attempts": result.attempts},
            )  # fmt: skip
            yield result.start, result.stop, request, {}

    # --- objects ---------------------------------------------------------------------------------------------
    def create_object(self, name: str, description: str) -> str:
        """A Partner audience named `name` (the Segment API has no description field, reference §1.3)."""
        return self.client.create_audience(name)

    def read_back(self, object_id: str) -> ReadBack:
        """`cover_num` from /dmp/custom_audience/get/; `is_valid` as the status. TikTok recomputes it in 24–48 h."""
        details = self.client.audience(object_id)
        cover = details.get("cover_num")
        valid = details.get("is_valid")
        status = None if valid is None else ("VALID" if valid else "NOT_VALID")
        if details.get("is_expiring"):
            status = f"{status or 'UNKNOWN'} (EXPIRING)"
        matched = int(cover) if isinstance(cover, int | float) and cover >= 0 else None
        return ReadBack(matched, status, READ_BACK_NOTE)

    def create_lookalike(self, seed_object_id: str, name: str, spec: dict) -> str:
        """`spec` is destinations.yaml's entry: audience_size (default BALANCED), location_ids, include_source,
        mobile_os, placements (reference §1.8). The seed needs ≥ 100 users."""
        return self.client.create_lookalike(
            name, seed_object_id, {"audience_size": "BALANCED", **(spec or {})}
        )
