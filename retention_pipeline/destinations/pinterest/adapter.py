"""Pinterest customer lists: SHA-256 email hashes added and removed per list, read back through its audience.

The object id the engine records per segment is the **customer list id** (what ADD/REMOVE patch). The list's
CUSTOMER_LIST audience — what ads target, what reports a matched size, what seeds an actalike — is found from the
list (`PinterestClient.audience_for_list`) and remembered for the run.

Pinterest creates a list only from records, so `create_object` needs the segment's first members: it creates the
list from the first request's worth of them and then its audience. Called without members it fails and sends
nothing: the alternatives are an undocumented empty `records` or placeholder people, and we send neither. The
engine then re-sends those first members through its normal ADD (a set operation: membership is unchanged, only
Pinterest's upload counter grows), so the ledger acknowledges them from PATCH answers like every other add.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from retention_pipeline.destinations._http import clip
from retention_pipeline.destinations.adapter_kit import AudienceAdapter
from retention_pipeline.destinations.pinterest.client import PinterestClient, PinterestError
from retention_pipeline.destinations.plugin import ItemResult, ReadBack, RequestResult, SendResult

KEY = "EMAIL"  # the payload key payload.sql writes


class PinterestAdapter(AudienceAdapter):
    """Pinterest customer lists (EMAIL): one PATCH per ≤ batch of hashes, ADD for adds, REMOVE for removes."""

    name = "pinterest"

    def __init__(
        self, client: PinterestClient, section: dict | None = None, objects: dict[str, str] | None = None
    ):
        self.client, self.objects = client, dict(objects or {})
        self.per_request_limit = client.per_request
        self._audiences: dict[str, str] = {}  # customer list id → its CUSTOMER_LIST audience id
        # Set by the engine: segment → the neutral name of a list to create from its first adds (see send).
        self.pending: dict[str, str] = {}
        self.created: dict[str, str] = {}  # segment → list id created during this run (the engine records it)

    creates_on_first_add = True  # the engine defers creation to `send`, which has the members

    def send(self, segment, changes, context):
        """Creates the segment's list from its first adds when it has none yet, then syncs as usual."""
        if segment.name not in self.objects:
            adds = [c.payload for c in changes if c.operation in ("add", "update")]
            if not adds:
                # No list of ours exists for this segment in this account, so nobody is in one: removals hold.
                return SendResult(items=[ItemResult(c.member_key, c.operation, True) for c in changes])
            name = self.pending.get(segment.name)
            reason = None if adds and name else "no customer list yet and nothing to add to create it from"
            if reason is None:
                try:
                    # A list created by a run that died before recording it carries the same neutral name: reuse it.
                    found = next(
                        (str(c["id"]) for c in self.client.customer_lists() if c.get("name") == name), None
                    )
                    self.objects[segment.name] = self.created[segment.name] = found or self.create_object(
                        name, "retention_pipeline segment audience", adds
                    )
                except PinterestError as error:
                    reason = f"customer list not created: {clip(str(error))}"
            if reason is not None:
                request = RequestResult("create", len(changes), ok=False, error=reason)
                return SendResult(
                    requests=[request] if adds else [],
                    items=[
                        ItemResult(c.member_key, c.operation, False, reason, request.request_id)
                        for c in changes
                    ],
                )
        return super().send(segment, changes, context)

    def _call(self, segment, action, payloads, context):
        list_id = self.objects[segment.name]
        records = [p.get(KEY) or "" for p in payloads]
        call = self.client.add if action == "add" else self.client.remove
        for result in call(list_id, records):
            request = RequestResult(
                action, result.stop - result.start, ok=result.ok, http_status=result.status,
                error=result.message or result.reason,
                detail={"customer_list_id": list_id, "operation_type": result.operation, "code": result.code,
                        "attempts": result.attempts, "list_status": result.list_status,
                        "num_uploaded_user_records": result.num_uploaded_user_records,
                        "num_removed_user_records": result.num_removed_user_records},
            )  # fmt: skip
            yield result.start, result.stop, request, {}

    # --- objects ---------------------------------------------------------------------------------------------

    def create_object(self, name: str, description: str, members: Sequence[dict] | None = None) -> str:
        """A customer list created from the first ≤ per_request `members` (payloads), then its CUSTOMER_LIST
        audience; returns the list id. If the audience call fails, the list id is still returned (the list holds
        people by then, so it must be recorded) and `read_back` creates the audience."""
        records = [m[KEY] for m in members or () if m.get(KEY)][: self.client.per_request]
        if not records:
            raise PinterestError(
                "Pinterest creates a customer list only from records: pass the segment's first members, or "
                "give an existing list id as pinterest.customer_lists.<segment> in destinations.yaml"
            )
        list_id = str(self.client.create_customer_list(name, records)["id"])
        with contextlib.suppress(PinterestError):  # else read_back (after the sync) creates it
            self._audiences[list_id] = str(self.client.create_audience(name, list_id, description)["id"])
        return list_id

    def audience_id(self, list_id: str, name: str | None = None) -> str:
        """The list's CUSTOMER_LIST audience id; created (once) when the list has none, named like the list."""
        if list_id not in self._audiences:
            found = self.client.audience_for_list(list_id)
            if found is None:
                name = name or self.client.customer_list(list_id).get("name") or f"customer list {list_id}"
                found = self.client.create_audience(name, list_id)
            self._audiences[list_id] = str(found["id"])
        return self._audiences[list_id]

    def read_back(self, object_id: str) -> ReadBack:
        """The audience's `size` (matched Pinterest accounts) and status; the list's counters are uploads, not
        members, so they are never reported as a size."""
        listed = self.client.customer_list(object_id)
        audience = self.client.audience(self.audience_id(object_id, listed.get("name")))
        size = audience.get("size")
        note = (
            f"audience size of matched Pinterest accounts (list {listed.get('status')}); Pinterest matches "
            "asynchronously (hours) and needs >= 100 matched accounts (TOO_SMALL below)"
        )
        return ReadBack(
            None if size is None else int(size), audience.get("status") or listed.get("status"), note
        )

    def create_lookalike(self, seed_object_id: str, name: str, spec: dict) -> str:
        """An ACTALIKE seeded by the list's audience (`spec`: country US/CA/GB, percentage 1-10). The seed must be
        READY (≥ 100 matched accounts): checked first, so an early attempt costs a read, not a write."""
        seed = self.audience_id(seed_object_id)
        status = self.client.audience(seed).get("status")
        if status != "READY":
            raise PinterestError(
                f"seed audience {seed} of customer list {seed_object_id} is {status}, not READY: Pinterest needs "
                ">= 100 matched accounts before it can seed an actalike"
            )
        created = self.client.create_actalike(
            name, [seed], country=str(spec.get("country", "US")), percentage=spec.get("percentage", 1)
        )
        return str(created["id"])
