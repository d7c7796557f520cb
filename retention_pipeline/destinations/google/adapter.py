"""Google Customer Match through Data Manager: hashed email/phone per member, consent granted (only consenting
people reach this adapter). Data Manager cannot create user lists or report their size: both need the Google Ads
API, so a user list id in destinations.yaml is required and `destination_matched` stays empty."""

from __future__ import annotations

from collections.abc import Callable

from retention_pipeline.destinations.adapter_kit import AudienceAdapter
from retention_pipeline.destinations.google.client import GoogleDataManagerClient
from retention_pipeline.destinations.plugin import RequestResult


class GoogleAdapter(AudienceAdapter):
    """Google Data Manager: hashed email/phone per member, consent granted (only consenting people get here)."""

    name = "google"
    CONSENT = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}

    per_request_limit = 10_000

    def __init__(
        self,
        client: GoogleDataManagerClient,
        section: dict | None = None,
        objects: dict[str, str] | None = None,
    ):
        self.client, self.objects = client, dict(objects or {})
        self.operating_account = dict((section or {}).get("operating_account") or {})

    def _call(self, segment, action, payloads, context):
        destination = {
            "operatingAccount": self.operating_account,
            "productDestinationId": self.objects[segment.name],
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
