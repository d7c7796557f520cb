"""Meta Custom Audiences client: add and remove hashed customer-file rows, one result per request.

Rows go up in sessions of ≤ 10,000-row requests (`batch_seq` 1, 2, …; `last_batch_flag` on the last), so Meta
can report one upload. Throttles (the custom_audience business-use-case limit and the ad-account score) are waited
out; any other Graph error is returned on the request's result, its message redacted by `clip`. Identifier columns must already be SHA-256 hex:
the client refuses to send anything else, so raw PII cannot leave even through a caller's mistake.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations._http import PooledClient, Reply, clip
from retention_pipeline.destinations.identity import is_sha256_hex

GRAPH_URL = "https://graph.facebook.com/v25.0"
MAX_ROWS = 10_000
# Throttles: app (4), ad-account score (17, 613), custom_audience business-use-case limit (80000-80014).
THROTTLE_CODES = frozenset({4, 17, 613, 80000, 80003, 80004, 80014})
# Graph's "unknown error" and "service temporarily unavailable" are transient by definition.
TRANSIENT_CODES = frozenset({1, 2})
AUTH_CODES = frozenset({102, 104, 190})
# Keys Meta expects normalized and SHA-256 hashed (EXTERN_ID, MADID and the LDU columns are sent as they are).
HASHED_KEYS = frozenset(
    {"EMAIL", "PHONE", "EMAIL_SHA256", "PHONE_SHA256", "FN", "LN", "FI", "GEN", "DOBY", "DOBM", "DOBD",
     "CT", "ST", "ZIP", "COUNTRY"}
)  # fmt: skip


class MetaAuthError(ConfigError):
    """Meta rejected the access token (HTTP 401 or Graph codes 102/104/190)."""


class MetaError(RuntimeError):
    """An audience or account call failed (membership calls report failures on their results instead)."""


@dataclass(frozen=True)
class MetaResult:
    """The outcome of one `/users` request: rows[start:stop] of the caller's list.

    `num_received` is Meta's running total for the session; `num_invalid_entries` and `invalid_entry_samples`
    (value → reason, ≤ 100) describe rows of this request that Meta could not use.
    """

    audience_id: str
    session_id: int
    batch_seq: int
    start: int
    stop: int
    ok: bool
    status: int | None
    num_received: int | None = None
    num_invalid_entries: int | None = None
    invalid_entry_samples: dict = field(default_factory=dict)
    reason: str | None = None
    error_code: int | None = None
    error_subcode: int | None = None
    message: str | None = None
    fbtrace_id: str | None = None
    attempts: int = 0


class MetaClient(PooledClient):
    """Graph API at a pinned version (`graph_url` ends in /vNN.0) with a system-user token sent as Bearer."""

    def __init__(
        self,
        *,
        graph_url: str = GRAPH_URL,
        access_token: str,
        ad_account_id: str,
        http_client: httpx.Client | None = None,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 120.0,
        timeout_seconds: float = 60.0,
        max_rows: int = MAX_ROWS,
    ) -> None:
        if not access_token:
            raise ConfigError("Meta needs META_ACCESS_TOKEN.")
        account = str(ad_account_id).removeprefix("act_")
        if not account.isdigit():
            raise ConfigError(f"META_AD_ACCOUNT_ID={ad_account_id!r} is not a numeric ad account id.")
        self.graph_url = graph_url.rstrip("/")
        self.ad_account_id = account
        self.max_rows = max_rows
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._init_http(http_client, timeout_seconds, max_retries, backoff_seconds, max_backoff_seconds)

    # --- membership ------------------------------------------------------------------------------------------

    def add_users(
        self, audience_id: str, schema: list[str], rows: list[list[str]], session_id: int
    ) -> list[MetaResult]:
        """`POST /{audience_id}/users` in ≤ max_rows-row requests of one session; one result per request."""
        return self._upload("POST", audience_id, schema, rows, session_id)

    def remove_users(
        self, audience_id: str, schema: list[str], rows: list[list[str]], session_id: int
    ) -> list[MetaResult]:
        """`DELETE /{audience_id}/users`, chunked and sessioned like `add_users`."""
        return self._upload("DELETE", audience_id, schema, rows, session_id)

    def _upload(
        self, method: str, audience_id: str, schema: list[str], rows: list[list[str]], session_id: int
    ) -> list[MetaResult]:
        _check_rows(schema, rows)
        if isinstance(session_id, bool) or not isinstance(session_id, int) or not 0 < session_id < 2**63:
            raise ValueError("session_id must be a positive 64-bit integer")
        url = f"{self.graph_url}/{quote(str(audience_id), safe='')}/users"
        starts = range(0, len(rows), self.max_rows)
        results = []
        for batch_seq, start in enumerate(starts, 1):
            chunk = rows[start : start + self.max_rows]
            body = {
                "payload": {"schema": list(schema), "data": chunk},
                "session": {
                    "session_id": session_id,
                    "batch_seq": batch_seq,
                    "last_batch_flag": batch_seq == len(starts),
                    "estimated_num_total": len(rows),
                },
            }
            reply = self._send(method, url, json=body)
            results.append(self._result(reply, str(audience_id), session_id, batch_seq, start, len(chunk)))
        return results

    def _result(
        self, reply: Reply, audience_id: str, session_id: int, batch_seq: int, start: int, size: int
    ) -> MetaResult:
        base = {
            "audience_id": audience_id,
            "session_id": session_id,
            "batch_seq": batch_seq,
            "start": start,
            "stop": start + size,
            "status": reply.response.status_code if reply.response is not None else None,
            "attempts": reply.attempts,
        }
        error = _graph_error(reply.response)
        if reply.reason is None and error is None and reply.response.status_code < 400:
            try:
                body = reply.response.json()
                return MetaResult(
                    **base,
                    ok=True,
                    num_received=body.get("num_received"),
                    num_invalid_entries=body.get("num_invalid_entries"),
                    # Keys are the values we sent (hashes, extern ids); the reasons are Meta's words.
                    invalid_entry_samples={
                        value: clip(reason)
                        for value, reason in (body.get("invalid_entry_samples") or {}).items()
                    },
                )
            except (ValueError, AttributeError):
                return MetaResult(**base, ok=False, reason="unparseable_response")
        error = error or {}
        if reply.attempts > 1 and (error.get("code"), error.get("error_subcode")) == SESSION_FINISHED:
            # Our retry of a batch whose answer was lost: Meta had received it and closed the session.
            return MetaResult(
                **base, ok=True, message="session finished before the retry: the first attempt landed"
            )
        return MetaResult(
            **base,
            ok=False,
            reason=reply.reason or "graph_error",
            error_code=error.get("code"),
            error_subcode=error.get("error_subcode"),
            message=clip(reply.message if reply.reason else error.get("message")),
            fbtrace_id=error.get("fbtrace_id"),
        )

    # --- audiences and account -----------------------------------------------------------------------------

    def create_audience(
        self, name: str, description: str = "", customer_file_source: str = "USER_PROVIDED_ONLY"
    ) -> str:
        """A new customer-file custom audience in the ad account; returns its id."""
        body = {
            "name": name,
            "description": description,
            "subtype": "CUSTOM",
            "customer_file_source": customer_file_source,
        }
        reply = self._send("POST", f"{self.graph_url}/act_{self.ad_account_id}/customaudiences", json=body)
        return str(self._checked(reply)["id"])

    def ad_account(self) -> dict:
        """`GET /act_{id}`: proves the token can see the ad account (used as a startup probe)."""
        reply = self._send("GET", f"{self.graph_url}/act_{self.ad_account_id}", params={"fields": "id,name"})
        return self._checked(reply)

    @staticmethod
    def _checked(reply: Reply) -> dict:
        error = _graph_error(reply.response)
        if reply.reason is not None:
            raise MetaError(f"{reply.reason}: {reply.message}")
        if error is not None or reply.response.status_code >= 400:
            error = error or {}
            raise MetaError(
                f"HTTP {reply.response.status_code}, code {error.get('code')}: {clip(error.get('message'))}"
            )
        return reply.response.json()

    # --- transport -------------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: object) -> Reply:
        """One logical request: throttles, 5xx, transient codes, timeouts retried; raises only for the token."""
        for attempt in range(1, self.max_retries + 2):
            response = None
            try:
                response = self._http.request(method, url, headers=self._headers, **kwargs)
            except httpx.TimeoutException as error:
                reason, message, wait = "timeout", type(error).__name__, self._backoff(attempt)
            except httpx.TransportError as error:
                reason, message, wait = "connection_error", type(error).__name__, self._backoff(attempt)
            else:
                error = _graph_error(response) or {}
                code = error.get("code")
                if response.status_code == 401 or code in AUTH_CODES:
                    raise MetaAuthError(
                        f"Meta rejected the access token (HTTP {response.status_code}, code {code}); "
                        "check META_ACCESS_TOKEN."
                    )
                if code in THROTTLE_CODES or response.status_code == 429:
                    reason, message = "throttled", f"HTTP {response.status_code}, code {code}"
                    regain = _regain_access_seconds(response)
                    wait = min(regain, self.max_backoff_seconds) if regain else self._backoff(attempt)
                elif response.status_code >= 500 or code in TRANSIENT_CODES or error.get("is_transient"):
                    reason, message = "server_error", f"HTTP {response.status_code}, code {code}"
                    wait = self._backoff(attempt)
                else:
                    return Reply(response, attempt)
            if attempt > self.max_retries:
                return Reply(response, attempt, reason, f"{message} after {attempt} attempts")
            time.sleep(wait)
        raise AssertionError("unreachable")


SESSION_FINISHED = (2650, 1870159)


def _check_rows(schema: list[str], rows: list[list[str]]) -> None:
    """Refuse the whole call before anything is sent: misaligned rows, or identifiers that are not hashes."""
    if not isinstance(schema, list) or not schema or not all(isinstance(k, str) and k for k in schema):
        raise ValueError("schema must be a non-empty list of Meta schema keys")
    hashed = [position for position, key in enumerate(schema) if key in HASHED_KEYS]
    for index, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != len(schema):
            raise ValueError(f"rows[{index}] does not have one value per schema key ({len(schema)})")
        for position in hashed:
            value = row[position]
            if value != "" and not is_sha256_hex(value):
                raise ValueError(
                    f"rows[{index}] column {schema[position]} is not a SHA-256 hex digest; normalize and hash "
                    "identifiers before sending (raw PII must never leave)"
                )


def _graph_error(response: httpx.Response | None) -> dict | None:
    """The Graph error object (`{"error": {"code", "error_subcode", "message", "type", ...}}`), if any."""
    if response is None:
        return None
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error if isinstance(error, dict) else None


def _regain_access_seconds(response: httpx.Response) -> float | None:
    """X-Business-Use-Case-Usage: {account: [{"estimated_time_to_regain_access": minutes, ...}]} → seconds."""
    try:
        usage = json.loads(response.headers.get("x-business-use-case-usage", ""))
        minutes = [
            float(entry["estimated_time_to_regain_access"])
            for entries in usage.values()
            for entry in entries
            if entry.get("estimated_time_to_regain_access")
        ]
    except (ValueError, TypeError, AttributeError, KeyError):
        return None
    return max(minutes) * 60 if minutes else None
