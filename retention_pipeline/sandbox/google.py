"""Google Data Manager `audienceMembers:ingest` / `:remove`, with the user lists' members kept.

Reproduced: Bearer auth with 401 UNAUTHENTICATED, google.rpc error bodies (`{"error": {"code", "message",
"status", "details"}}`), the per-request limits (10,000 members, 10 identifiers a member, 10 destinations) as 400
INVALID_ARGUMENT, unhashed identifiers refused, `termsOfService` ACCEPTED and both consent signals required on
ingest, a `requestId` per accepted request, and 429 RESOURCE_EXHAUSTED naming its quota in an ErrorInfo detail.
Google validates synchronously only the request's shape; per-member processing results come later by requestId,
which this sandbox does not model.
"""

from __future__ import annotations

import base64
import binascii
import uuid

import httpx

from retention_pipeline.destinations.identity import is_sha256_hex
from retention_pipeline.sandbox.recording import RecordingSandbox, json_body, json_response

ENCODINGS = ("HEX", "BASE64")
CONSENT_KEYS = ("adUserData", "adPersonalization")
QUOTA_LIMIT = "IngestionMutateRequestsPerMinutePerProject"


class _InvalidArgument(Exception):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field, self.description = field, description


class GoogleDataManagerSandbox(RecordingSandbox):
    """One project's view of its user lists. `access_token=None` accepts any non-empty Bearer token."""

    def __init__(
        self,
        *,
        access_token: str | None = None,
        requests_per_second: float | None = None,
        max_members: int = 10_000,
        max_identifiers: int = 10,
        max_destinations: int = 10,
    ) -> None:
        super().__init__(requests_per_second)
        self.max_members = max_members
        self.max_identifiers = max_identifiers
        self.max_destinations = max_destinations
        self.request_ids: list[str] = []
        self._access_token = access_token
        self._lists: dict[str, dict[frozenset, dict]] = {}

    # --- what tests assert on --------------------------------------------------------------------------------

    def members(self, user_list_id: str, identifier: str = "emailAddress") -> set[str]:
        """The hashed `identifier` values (emailAddress or phoneNumber) of the list's current members."""
        with self._lock:
            return {v for key in self._lists.get(str(user_list_id), {}) for k, v in key if k == identifier}

    def member_count(self, user_list_id: str) -> int:
        with self._lock:
            return len(self._lists.get(str(user_list_id), {}))

    # --- dispatch --------------------------------------------------------------------------------------------

    def _respond(self, request: httpx.Request) -> httpx.Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or self._access_token not in (None, token):
            return _error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
            )
        action = {"/v1/audienceMembers:ingest": "ingest", "/v1/audienceMembers:remove": "remove"}.get(
            request.url.path
        )
        if action is None or request.method != "POST":
            return _error(404, "NOT_FOUND", f"Method not found: {request.method} {request.url.path}")
        try:
            return self._members_request(request, action)
        except _InvalidArgument as error:
            violation = {"field": error.field, "description": error.description}
            details = [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}]
            return _error(400, "INVALID_ARGUMENT", error.description, details)

    def _rate_limited(self) -> httpx.Response:
        detail = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"quota_limit": QUOTA_LIMIT, "service": "datamanager.googleapis.com"},
        }
        message = f"Quota exceeded for quota metric 'Ingestion requests' and limit '{QUOTA_LIMIT}'."
        return _error(429, "RESOURCE_EXHAUSTED", message, [detail])

    # --- ingest and remove -----------------------------------------------------------------------------------

    def _members_request(self, request: httpx.Request, action: str) -> httpx.Response:
        try:
            body = json_body(request)
        except ValueError as error:
            raise _InvalidArgument("", str(error)) from None
        if not isinstance(body, dict):
            raise _InvalidArgument("", "The request body must be a JSON object.")
        list_ids = self._destinations(body.get("destinations"))
        members = body.get("audienceMembers")
        if not isinstance(members, list) or not members:
            raise _InvalidArgument("audience_members", "At least one audience member is required.")
        if len(members) > self.max_members:
            raise _InvalidArgument(
                "audience_members",
                f"Too many audience members: {len(members)} (the limit is {self.max_members}).",
            )
        encoding = body.get("encoding")
        if encoding not in ENCODINGS:
            raise _InvalidArgument("encoding", "encoding must be HEX or BASE64 when userData is sent.")
        if action == "ingest":
            terms = (body.get("termsOfService") or {}).get("customerMatchTermsOfServiceStatus")
            if terms != "ACCEPTED":
                raise _InvalidArgument(
                    "terms_of_service", "Customer Match terms of service must be ACCEPTED to ingest userData."
                )
        keys = [
            self._member(member, index, encoding, action, body.get("consent"))
            for index, member in enumerate(members)
        ]
        if body.get("validateOnly") is not True:
            for list_id in list_ids:
                stored = self._lists.setdefault(list_id, {})
                for key in keys:
                    if action == "ingest":
                        stored[key] = dict(key)
                    else:
                        for existing in [s for s in stored if s & key]:
                            del stored[existing]
        request_id = str(uuid.uuid4())
        self.request_ids.append(request_id)
        return json_response({"requestId": request_id})

    def _destinations(self, destinations: object) -> list[str]:
        if not isinstance(destinations, list) or not destinations:
            raise _InvalidArgument("destinations", "At least one destination is required.")
        if len(destinations) > self.max_destinations:
            raise _InvalidArgument(
                "destinations", f"At most {self.max_destinations} destinations per request."
            )
        list_ids = []
        for index, destination in enumerate(destinations):
            where = f"destinations[{index}]"
            if not isinstance(destination, dict) or not destination.get("productDestinationId"):
                raise _InvalidArgument(f"{where}.product_destination_id", "productDestinationId is required.")
            account = destination.get("operatingAccount")
            if (
                not isinstance(account, dict)
                or not account.get("accountId")
                or not account.get("accountType")
            ):
                raise _InvalidArgument(
                    f"{where}.operating_account", "operatingAccount needs accountType and accountId."
                )
            list_ids.append(str(destination["productDestinationId"]))
        return list_ids

    def _member(self, member: object, index: int, encoding: str, action: str, consent: object) -> frozenset:
        where = f"audience_members[{index}]"
        if not isinstance(member, dict):
            raise _InvalidArgument(where, "An audience member must be an object.")
        if action == "ingest":
            self._consent(member.get("consent", consent), f"{where}.consent")
        identifiers = (member.get("userData") or {}).get("userIdentifiers")
        if not isinstance(identifiers, list) or not identifiers:
            raise _InvalidArgument(f"{where}.user_data", "userData.userIdentifiers must not be empty.")
        if len(identifiers) > self.max_identifiers:
            raise _InvalidArgument(
                f"{where}.user_data",
                f"At most {self.max_identifiers} identifiers per member, got {len(identifiers)}.",
            )
        pairs = []
        for position, identifier in enumerate(identifiers):
            field = f"{where}.user_data.user_identifiers[{position}]"
            if not isinstance(identifier, dict) or len(identifier) != 1:
                raise _InvalidArgument(
                    field, "Exactly one of emailAddress, phoneNumber or address is required."
                )
            ((kind, value),) = identifier.items()
            if kind in ("emailAddress", "phoneNumber"):
                _hashed(value, encoding, f"{field}.{kind}")
                pairs.append((kind, value.lower() if encoding == "HEX" else value))
            elif kind == "address" and isinstance(value, dict):
                for part in ("givenName", "familyName"):
                    _hashed(value.get(part), encoding, f"{field}.address.{part}")
                if not value.get("regionCode") or not value.get("postalCode"):
                    raise _InvalidArgument(f"{field}.address", "regionCode and postalCode are required.")
                pairs.append(
                    (
                        "address",
                        "|".join(
                            str(value[p]) for p in ("givenName", "familyName", "regionCode", "postalCode")
                        ),
                    )
                )
            else:
                raise _InvalidArgument(field, f"Unknown identifier {kind}.")
        return frozenset(pairs)

    @staticmethod
    def _consent(consent: object, field: str) -> None:
        if not isinstance(consent, dict) or any(k not in consent for k in CONSENT_KEYS):
            raise _InvalidArgument(
                field, "Consent with adUserData and adPersonalization is required to ingest."
            )
        if any(consent[k] == "CONSENT_DENIED" for k in CONSENT_KEYS):
            raise _InvalidArgument(field, "Consent was denied; members without consent cannot be ingested.")
        if any(consent[k] != "CONSENT_GRANTED" for k in CONSENT_KEYS):
            raise _InvalidArgument(field, "Consent values must be CONSENT_GRANTED or CONSENT_DENIED.")


def _hashed(value: object, encoding: str, field: str) -> None:
    """HEX: 64 hex chars (Google accepts either case); BASE64: 32 bytes. Anything else looks unhashed."""
    if encoding == "HEX":
        ok = isinstance(value, str) and is_sha256_hex(value.lower())
    else:
        try:
            ok = isinstance(value, str) and len(base64.b64decode(value, validate=True)) == 32
        except (binascii.Error, ValueError):
            ok = False
    if not ok:
        raise _InvalidArgument(field, f"The value is not a SHA-256 hash in {encoding} encoding.")


def _error(status: int, code_name: str, message: str, details: list | None = None) -> httpx.Response:
    error = {"code": status, "message": message, "status": code_name}
    if details:
        error["details"] = details
    return json_response({"error": error}, status)


def embedded(**settings: object) -> GoogleDataManagerSandbox:
    """The in-process sandbox a run uses when no Google credentials are set (see transports.py)."""
    return GoogleDataManagerSandbox(**settings)
