"""Meta Custom Audiences: multi-key (EMAIL, PHONE) SHA-256 rows, one session per upload."""

from __future__ import annotations

from retention_pipeline.destinations.adapter_kit import AudienceAdapter, session_id
from retention_pipeline.destinations.meta.client import MetaClient
from retention_pipeline.destinations.plugin import ReadBack, RequestResult


class MetaAdapter(AudienceAdapter):
    """Meta Custom Audiences: multi-key (EMAIL, PHONE) SHA-256 rows, one session per upload."""

    name = "meta"
    SCHEMA = ["EMAIL", "PHONE"]

    per_request_limit = 10_000

    def __init__(
        self, client: MetaClient, section: dict | None = None, objects: dict[str, str] | None = None
    ):
        self.client, self.objects = client, dict(objects or {})

    def _call(self, segment, action, payloads, context):
        audience = self.objects[segment.name]
        rows = [[p.get(k) or "" for k in self.SCHEMA] for p in payloads]
        call = self.client.add_users if action == "add" else self.client.remove_users
        session = session_id(context.sync_id, segment.name, action)
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

    # --- objects ---------------------------------------------------------------------------------------------
    def create_object(self, name: str, description: str) -> str:
        """A customer-file audience (`customer_file_source=USER_PROVIDED_ONLY`: we collected the data ourselves)."""
        return self.client.create_audience(name, description)

    def read_back(self, object_id: str) -> ReadBack:
        """Meta's `approximate_count_lower_bound` of *matched* people, refreshed asynchronously.

        Membership changes "usually take up to 24 hours" (Custom Audience Users reference), so a read right after a
        sync describes an earlier state. Meta withholds the size of small audiences (Ads Manager shows "below
        1,000"; users report -1 from the API, which the reference does not document), so a negative bound is
        reported as `matched=None`. An `operation_status` other
        than 200 (471: flagged as suggesting health or financial information; Meta will not deliver to it) is
        named in the note.
        """
        fields = self.client.audience(object_id)
        operation = fields.get("operation_status") or {}
        status = operation.get("description")
        matched = fields.get("approximate_count_lower_bound")
        if matched is None:
            note = "Meta did not report approximate_count_lower_bound"
        elif matched < 0:
            note = "Meta withholds the size of small audiences (approximate_count_lower_bound = -1)"
        else:
            note = "approximate_count_lower_bound; Meta updates it asynchronously (up to 24 h)"
        code = operation.get("code")
        if code == 471:
            note += "; operation_status 471: flagged by Meta (no delivery); use a neutral name"
        elif code is not None and code != 200:
            note += f"; operation_status {code}"
        return ReadBack(None if matched is None or matched < 0 else int(matched), status, note)

    def create_lookalike(self, seed_object_id: str, name: str, spec: dict) -> str:
        """`spec` is destinations.yaml's entry: `country` (ISO alpha-2, default US) and `ratio` (0.01-0.20, default
        0.01). Meta refuses a seed with fewer than 100 members (MetaError, code 2654)."""
        return self.client.create_lookalike(
            name, seed_object_id, country=str(spec.get("country", "US")), ratio=float(spec.get("ratio", 0.01))
        )
