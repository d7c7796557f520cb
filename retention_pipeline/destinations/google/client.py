"""Google Data Manager client: ingest and remove hashed Customer Match members, one result per request.

A success only means accepted: Google processes the request later and reports on it by `requestId` (about 30 min
on), so every result carries the id for the ledger. Quota errors (429 RESOURCE_EXHAUSTED, 300 requests/min per
project) and transient 5xx are waited out; anything else comes back on the request's result, Google's words redacted
by `clip`. Identifiers must already be SHA-256 hex (emailAddress, phoneNumber, address names); anything else is
refused before sending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations._http import PooledClient, Reply, clip
from retention_pipeline.destinations.identity import is_sha256_hex

DATA_MANAGER_URL = "https://datamanager.googleapis.com"
MAX_MEMBERS = 10_000
MAX_IDENTIFIERS = 10
MAX_DESTINATIONS = 10
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
CONSENT_KEYS = ("adUserData", "adPersonalization")


class GoogleAuthError(ConfigError):
    """Google answered 401 UNAUTHENTICATED: the access token is missing, wrong or expired."""


@dataclass(frozen=True)
class GoogleResult:
    """The outcome of one ingest/remove request: members[start:stop] of the caller's list."""

    action: str
    start: int
    stop: int
    ok: bool
    status: int | None
    request_id: str | None = None
    reason: str | None = None
    error_status: str | None = None
    message: str | None = None
    quota_limit: str | None = None
    attempts: int = 0


class GoogleDataManagerClient(PooledClient):
    """`POST /v1/audienceMembers:ingest|remove` with an OAuth access token (scope auth/datamanager) as Bearer."""

    def __init__(
        self,
        *,
        url: str = DATA_MANAGER_URL,
        access_token: str,
        http_client: httpx.Client | None = None,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        timeout_seconds: float = 60.0,
        max_members: int = MAX_MEMBERS,
    ) -> None:
        if not access_token:
            raise ConfigError("Google Data Manager needs GOOGLE_ACCESS_TOKEN.")
        self.url = url.rstrip("/")
        self.max_members = max_members
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._init_http(http_client, timeout_seconds, max_retries, backoff_seconds, max_backoff_seconds)

    def ingest(
        self,
        destinations: list[dict],
        members: list[dict],
        *,
        consent: dict | None = None,
        validate_only: bool = False,
    ) -> list[GoogleResult]:
        """Add members to the destinations' user lists, ≤ max_members a request.

        Every member needs consent: its own `consent`, else the request-level `consent` given here (member-level
        wins at Google). Missing or denied consent is refused before sending: Google counts missing as not
        granted, and one denial fails the whole request.
        """
        _check(destinations, members)
        if consent is not None:
            _check_consent(consent, "consent")
        missing = next((i for i, m in enumerate(members) if "consent" not in m and consent is None), None)
        if missing is not None:
            raise ValueError(f"members[{missing}] has no consent and no request-level consent was given")
        for index, member in enumerate(members):
            if "consent" in member:
                _check_consent(member["consent"], f"members[{index}].consent")
        extra = {"termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"}}
        if consent is not None:
            extra["consent"] = consent
        return self._post("ingest", destinations, members, extra, validate_only)

    def remove(
        self, destinations: list[dict], members: list[dict], *, validate_only: bool = False
    ) -> list[GoogleResult]:
        """Remove members from the destinations' user lists, ≤ max_members a request (no consent needed)."""
        _check(destinations, members)
        return self._post("remove", destinations, members, {}, validate_only)

    def _post(
        self, action: str, destinations: list[dict], members: list[dict], extra: dict, validate_only: bool
    ) -> list[GoogleResult]:
        url = f"{self.url}/v1/audienceMembers:{action}"
        results = []
        for start in range(0, len(members), self.max_members):
            chunk = members[start : start + self.max_members]
            body = {
                "destinations": destinations,
                "audienceMembers": chunk,
                "encoding": "HEX",
                **extra,
                "validateOnly": validate_only,
            }
            reply = self._send(url, body)
            results.append(self._result(reply, action, start, start + len(chunk)))
        return results

    @staticmethod
    def _result(reply: Reply, action: str, start: int, stop: int) -> GoogleResult:
        response = reply.response
        status = response.status_code if response is not None else None
        error = _google_error(response) or {}
        if reply.reason is None and status == 200:
            try:
                request_id = response.json().get("requestId")
            except (ValueError, AttributeError):
                request_id = None
            if request_id:
                return GoogleResult(action, start, stop, True, status, request_id, attempts=reply.attempts)
            return GoogleResult(
                action, start, stop, False, status, reason="unparseable_response", attempts=reply.attempts
            )
        return GoogleResult(
            action,
            start,
            stop,
            False,
            status,
            reason=reply.reason or clip(error.get("status")) or f"http_{status}",
            error_status=clip(error.get("status")),
            message=clip(reply.message if reply.reason else error.get("message")),
            quota_limit=_quota_limit(error),
            attempts=reply.attempts,
        )

    def _send(self, url: str, body: dict) -> Reply:
        """One logical request: 429/5xx/timeouts retried (Retry-After honoured); raises only on 401."""
        for attempt in range(1, self.max_retries + 2):
            response = None
            try:
                response = self._http.post(url, headers=self._headers, json=body)
            except httpx.TimeoutException as error:
                reason, message, wait = "timeout", type(error).__name__, self._backoff(attempt)
            except httpx.TransportError as error:
                reason, message, wait = "connection_error", type(error).__name__, self._backoff(attempt)
            else:
                if response.status_code == 401:
                    raise GoogleAuthError(
                        "Google Data Manager rejected the access token (401 UNAUTHENTICATED); "
                        "check GOOGLE_ACCESS_TOKEN (tokens expire after about an hour)."
                    )
                if response.status_code not in RETRYABLE_STATUSES:
                    return Reply(response, attempt)
                error = _google_error(response) or {}
                reason = "rate_limited" if response.status_code == 429 else "server_error"
                message = f"HTTP {response.status_code} {error.get('status') or ''}".rstrip()
                wait = self._retry_wait(response, attempt, reason, message)
                if isinstance(wait, Reply):
                    return wait
            if attempt > self.max_retries:
                return Reply(response, attempt, reason, f"{message} after {attempt} attempts")
            time.sleep(wait)
        raise AssertionError("unreachable")


def _check(destinations: list[dict], members: list[dict]) -> None:
    """Refuse the whole call before anything is sent: bad destinations, oversized members, unhashed values."""
    if not isinstance(destinations, list) or not 1 <= len(destinations) <= MAX_DESTINATIONS:
        raise ValueError(f"destinations must hold 1-{MAX_DESTINATIONS} destinations")
    for index, destination in enumerate(destinations):
        if not isinstance(destination, dict) or not destination.get("productDestinationId"):
            raise ValueError(f"destinations[{index}] needs a productDestinationId (the user list id)")
    for index, member in enumerate(members):
        identifiers = (
            (member.get("userData") or {}).get("userIdentifiers") if isinstance(member, dict) else None
        )
        if not isinstance(identifiers, list) or not 1 <= len(identifiers) <= MAX_IDENTIFIERS:
            raise ValueError(
                f"members[{index}] needs userData.userIdentifiers with 1-{MAX_IDENTIFIERS} entries"
            )
        for position, identifier in enumerate(identifiers):
            _check_identifier(identifier, f"members[{index}].userData.userIdentifiers[{position}]")


def _check_identifier(identifier: object, where: str) -> None:
    if not isinstance(identifier, dict) or len(identifier) != 1:
        raise ValueError(f"{where} must hold exactly one of emailAddress, phoneNumber, address")
    ((kind, value),) = identifier.items()
    if kind in ("emailAddress", "phoneNumber"):
        hashed = [value]
    elif kind == "address" and isinstance(value, dict):
        if not all(value.get(k) for k in ("givenName", "familyName", "regionCode", "postalCode")):
            raise ValueError(f"{where}.address needs givenName, familyName, regionCode and postalCode")
        hashed = [value["givenName"], value["familyName"]]  # region and postal code are sent unhashed
    else:
        raise ValueError(f"{where} must hold exactly one of emailAddress, phoneNumber, address")
    if not all(is_sha256_hex(v) for v in hashed):
        raise ValueError(
            f"{where}.{kind} is not a SHA-256 hex digest; normalize and hash identifiers before sending "
            "(raw PII must never leave)"
        )


def _check_consent(consent: object, where: str) -> None:
    """Both signals granted: one DENIED fails Google's whole request, so such members must be left out upstream."""
    if not isinstance(consent, dict) or not all(consent.get(k) == "CONSENT_GRANTED" for k in CONSENT_KEYS):
        raise ValueError(f"{where} must grant both adUserData and adPersonalization (CONSENT_GRANTED)")


def _google_error(response: httpx.Response | None) -> dict | None:
    """The `{"error": {"code", "status", "message", "details"}}` object, if the body holds one."""
    if response is None:
        return None
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, dict) else None


def _quota_limit(error: dict) -> str | None:
    """Which quota a RESOURCE_EXHAUSTED hit, from its google.rpc.ErrorInfo detail."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            limit = (detail.get("metadata") or {}).get("quota_limit")
            if limit:
                return clip(limit)
    return None
