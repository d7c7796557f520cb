"""Meta Custom Audiences client: add and remove hashed customer-file rows, one result per request; create
customer-file audiences and lookalikes and read an audience's size range back.

Rows go up in sessions of ≤ 10,000-row requests (`batch_seq` 1, 2, …; `last_batch_flag` on the last), so Meta
can report one upload. Throttles (the custom_audience business-use-case limit and the ad-account score) are waited
out; any other Graph error is returned on the request's result, its message redacted by `clip`. Identifier columns must already be SHA-256 hex:
the client refuses to send anything else, so raw PII cannot leave even through a caller's mistake.
"""

from __future__ import annotations

import json
import re
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
# What read-back asks for (CustomAudience.Field names in the facebook-business SDK).
AUDIENCE_FIELDS = (
    "id", "name", "approximate_count_lower_bound", "approximate_count_upper_bound", "operation_status",
    "delivery_status", "subtype",
)  # fmt: skip
HASHED_KEYS = frozenset(
    {"EMAIL", "PHONE", "EMAIL_SHA256", "PHONE_SHA256", "FN", "LN", "FI", "GEN", "DOBY", "DOBM", "DOBD",
     "CT", "ST", "ZIP", "COUNTRY"}
)  # fmt: skip


class MetaAuthError(ConfigError):
    """Meta rejected the access token (HTTP 401 or Graph codes 102/104/190)."""


class MetaError(RuntimeError):
    """An audience or account call failed (membership calls report failures on their results instead).

    `code` / `subcode` are Graph's `error.code` / `error.error_subcode` when Meta answered with an error body, so a
    caller can tell an expected refusal (a lookalike seed too small: code 2654) from a broken call.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        subcode: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.subcode, self.attempts = status, code, subcode, attempts


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

    def audience(self, audience_id: str, fields: tuple[str, ...] = AUDIENCE_FIELDS) -> dict:
        """`GET /{audience_id}?fields=…`: the audience's size range and statuses, as Graph reports them.

        Field names are the SDK's `CustomAudience.Field` values (facebook_business/adobjects/customaudience.py).
        `approximate_count_lower_bound` is Meta's estimate of *matched* people, refreshed asynchronously (membership
        changes "usually take up to 24 hours", Custom Audience Users reference), not a count of rows we sent; see
        MetaAdapter.read_back for the small-audience value. `operation_status` is a CustomAudienceStatus
        `{code, description}`: 200 is normal, 471 means Meta flagged the audience as suggesting health or financial
        information and will not deliver to it (https://developers.facebook.com/docs/marketing-api/reference/
        custom-audience).
        """
        audience = str(audience_id)
        if not audience.isdigit():
            raise ValueError(f"audience_id={audience_id!r} is not a numeric Graph id")
        reply = self._send("GET", f"{self.graph_url}/{audience}", params={"fields": ",".join(fields)})
        return self._checked(reply)

    def create_lookalike(self, name: str, origin_audience_id: str, *, country: str, ratio: float) -> str:
        """A lookalike of `origin_audience_id` in `country`: the top `ratio` of that country's people; returns its id.

        `POST /act_{id}/customaudiences` with `subtype=LOOKALIKE`, `origin_audience_id` and `lookalike_spec`, a JSON
        string `{"ratio": r, "country": "US"}` (Lookalike Audiences guide,
        https://developers.facebook.com/documentation/ads-commerce/marketing-api/audiences/guides/lookalike-audiences:
        set either `type` (similarity/reach) or `ratio`, 0.01-0.20 in steps of 0.01; `country` is required unless
        `location_spec` is given; origin audiences need at least 100 members). The SDK declares the same parameters
        on AdAccount.create_custom_audience (`lookalike_spec: string`, `origin_audience_id: string`,
        `subtype: CustomAudience.Subtype.lookalike`). We send `ratio` and no `type`: with both, Meta ignores the
        ratio. Meta refuses a seed that is too small or a duplicate (same source, country and size) with Graph
        code 2654, raised here as MetaError with `.code` / `.subcode`.
        """
        if not name or not str(name).strip():
            raise ValueError("a lookalike needs a name")
        origin = str(origin_audience_id)
        if not origin.isdigit():
            raise ValueError(f"origin_audience_id={origin_audience_id!r} is not a numeric Graph id")
        code = str(country).strip().upper()
        if not re.fullmatch(r"[A-Z]{2}", code):
            raise ValueError(f"country={country!r} is not an ISO 3166-1 alpha-2 code")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not _is_lookalike_ratio(ratio):
            raise ValueError(f"ratio={ratio!r}: Meta takes 0.01 to 0.20 in steps of 0.01")
        body = {
            "name": name,
            "subtype": "LOOKALIKE",
            "origin_audience_id": origin,
            "lookalike_spec": json.dumps({"ratio": round(float(ratio), 2), "country": code}),
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
        status = reply.response.status_code if reply.response is not None else None
        if reply.reason is not None:
            raise MetaError(f"{reply.reason}: {reply.message}", status=status, attempts=reply.attempts)
        if error is not None or reply.response.status_code >= 400:
            error = error or {}
            code, subcode = error.get("code"), error.get("error_subcode")
            raise MetaError(
                f"HTTP {status}, code {code}"
                + (f"/{subcode}" if subcode is not None else "")
                + f": {clip(error.get('message'))}",
                status=status,
                code=code,
                subcode=subcode,
                attempts=reply.attempts,
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


def _is_lookalike_ratio(ratio: float) -> bool:
    """0.01 ≤ ratio ≤ 0.20 in whole percent (the Lookalike Audiences guide's `lookalike_spec.ratio`)."""
    percent = float(ratio) * 100
    return 1 - 1e-9 <= percent <= 20 + 1e-9 and abs(percent - round(percent)) < 1e-9


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
