"""TikTok custom audiences through the Segment ("Streaming" / Partner audience) API, one result per request.

Facts from `shared/reference/ad-audiences-tiktok-pinterest.md` (§ numbers below are that file's sections):
- Base URL with the version (`…/open_api/v1.3`); every path ends with `/`, else HTTP 404 (§1.1).
- Auth is the header `Access-Token: <token>`, not `Authorization: Bearer` (§1.1).
- Every answer is HTTP 200 with an envelope `{"code", "message", "request_id", "data"}`; `code` 0 is success and wins
  over the HTTP status (§1.1). There are no rate-limit headers and no Retry-After (§1.6).
- Members go up with `POST /segment/mapping/` (`action` add/delete, `id_schema`, `batch_data` one row per person with
  `{}` for an unknown position); the whole request succeeds or fails, there is no per-row result (§1.3).
- No documented rows-per-request cap (§3.1): `batch_rows` (TIKTOK_BATCH_ROWS, default 1,000, as peers use) and, when
  TikTok answers 40011 "too many IDs", the batch is halved for the rest of the call (§1.7 "split the batch").

Retries: throttles (40016, 40100, 40133), TikTok-side errors (5xxxx, 60001), the write conflict 40202, HTTP 5xx/429
and transport errors are backed off (jittered exponential, §1.6 gives no wait hint) up to `max_retries`. The token
codes (40102, 40104, 40105, 40106, 40119) are not retryable: they raise `TikTokAuthError`, a ConfigError naming
TIKTOK_ACCESS_TOKEN. Anything else comes back on the request's result (membership) or as `TikTokError` (objects).
Vendor text is passed through `clip` (emails, phones and URL credentials masked) and the token is never logged nor
put in a message. Identifiers must already be SHA-256 hex: the client refuses anything else before sending.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations._http import PooledClient, Reply, clip
from retention_pipeline.destinations.identity import is_sha256_hex

API_URL = "https://business-api.tiktok.com/open_api/v1.3"
BATCH_ROWS = 1000  # undocumented cap (§3.1); Tealium flushes at 1,000 records (§1.6)
ID_SCHEMA = ("EMAIL_SHA256", "PHONE_SHA256")
# The SHA-256 id types of /segment/mapping/ (§1.3). The MD5 kinds are left out: this project sends SHA-256 only.
SHA256_ID_TYPES = frozenset({"EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256", "GAID_SHA256"})
ACTIONS = ("add", "delete")
OK, PARTIAL_OK = 0, 20001
TOO_MANY_IDS = 40011
THROTTLE_CODES = frozenset({40016, 40100, 40133})
AUTH_CODES = frozenset({40102, 40104, 40105, 40106, 40119})
TRANSIENT_CODES = frozenset({40202, 60001})  # write conflict, maintenance; plus every 5xxxx
LOOKALIKE_SIZES = ("NARROW", "BALANCED", "BROAD")
LOOKALIKE_KEYS = frozenset({"audience_size", "include_source", "location_ids", "mobile_os", "placements"})
NAME_CHARS = 128  # custom_audience_name (§1.4, lookalike create body)


class TikTokAuthError(ConfigError):
    """TikTok refused the token (codes 40102/40104/40105/40106/40119): not retryable, fix the configuration."""


class TikTokError(RuntimeError):
    """An audience or account call failed (membership calls report failures on their results instead)."""


@dataclass(frozen=True)
class TikTokResult:
    """The outcome of one `/segment/mapping/` request: rows[start:stop] of the caller's list, all or nothing."""

    audience_id: str
    action: str
    start: int
    stop: int
    ok: bool
    status: int | None
    code: int | None = None
    message: str | None = None
    request_id: str | None = None  # TikTok's, to quote in a ticket
    reason: str | None = None  # throttled, server_error, timeout, connection_error, api_error, http_error, …
    attempts: int = 0


class TikTokClient(PooledClient):
    """The Marketing API at a pinned version (`api_url` ends in /open_api/v1.3) for one advertiser."""

    def __init__(
        self,
        *,
        api_url: str = API_URL,
        access_token: str,
        advertiser_id: str,
        http_client: httpx.Client | None = None,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 120.0,
        timeout_seconds: float = 60.0,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        if not access_token:
            raise ConfigError("TikTok needs TIKTOK_ACCESS_TOKEN.")
        advertiser = str(advertiser_id or "")
        if not advertiser.isdigit():
            raise ConfigError(f"TIKTOK_ADVERTISER_ID={advertiser_id!r} is not a numeric advertiser id.")
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
        self.api_url = api_url.rstrip("/")
        self.advertiser_id = advertiser
        self.batch_rows = batch_rows
        self._token = access_token
        self._headers = {"Access-Token": access_token}
        self._init_http(http_client, timeout_seconds, max_retries, backoff_seconds, max_backoff_seconds)

    # --- membership ------------------------------------------------------------------------------------------

    def mapping(
        self,
        action: str,
        audience_id: str,
        rows: list[list[str]],
        id_schema: tuple[str, ...] | list[str] = ID_SCHEMA,
    ) -> list[TikTokResult]:
        """`POST /segment/mapping/` in ≤ batch_rows-row requests; one result per request (no per-row result).

        Each row is one person: one SHA-256 hex per `id_schema` position, "" where unknown (sent as `{}`). A 40011
        answer ("too many IDs") halves the batch and resends it; the refused request changed nothing and is not a
        result."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        schema = _check_rows(id_schema, rows)
        audience = str(audience_id)
        url = self._url("segment/mapping")
        results: list[TikTokResult] = []
        start, size = 0, self.batch_rows
        while start < len(rows):
            chunk = rows[start : start + size]
            body = {
                "advertiser_ids": [self.advertiser_id],
                "action": action,
                "id_schema": schema,
                "batch_data": [
                    [{"id": value, "audience_ids": [audience]} if value else {} for value in row]
                    for row in chunk
                ],
            }
            reply = self._send("POST", url, json=body)
            if reply.reason is None and _code(reply.response) == TOO_MANY_IDS and len(chunk) > 1:
                size = (len(chunk) + 1) // 2
                continue
            results.append(self._result(reply, audience, action, start, len(chunk)))
            start += len(chunk)
        return results

    def _result(self, reply: Reply, audience_id: str, action: str, start: int, size: int) -> TikTokResult:
        envelope = _envelope(reply.response)
        base = {
            "audience_id": audience_id,
            "action": action,
            "start": start,
            "stop": start + size,
            "status": reply.response.status_code if reply.response is not None else None,
            "attempts": reply.attempts,
            "code": _code(reply.response),
            "request_id": (envelope or {}).get("request_id"),
        }
        if reply.reason is not None:
            return TikTokResult(**base, ok=False, reason=reply.reason, message=self._clip(reply.message))
        status, code = base["status"], base["code"]
        if envelope is None:
            reason = "http_error" if status >= 400 else "unparseable_response"
            return TikTokResult(**base, ok=False, reason=reason, message=f"HTTP {status}")
        if status == 200 and code == OK:
            return TikTokResult(**base, ok=True)
        # 20001 "partially OK" names no rows (§1.7): the whole request is reported failed, so its rows are resent
        # (adds and deletes are set operations, §4) rather than acknowledged blind.
        return TikTokResult(
            **base,
            ok=False,
            reason="partial_success" if code == PARTIAL_OK else "api_error",
            message=self._clip(f"code {code}: {envelope.get('message')}"),
        )

    # --- audiences -------------------------------------------------------------------------------------------

    def create_audience(self, name: str) -> str:
        """`POST /segment/audience/` action create: a Partner audience; returns `data.audience_id` (§1.3)."""
        body = {"advertiser_id": self.advertiser_id, "action": "create", "custom_audience_name": _name(name)}
        data = self._data(self._send("POST", self._url("segment/audience"), json=body))
        return str(data["audience_id"])

    def audience(self, audience_id: str) -> dict:
        """`GET /dmp/custom_audience/get/`: the audience's `audience_details` (`cover_num`, `is_valid`, …) (§1.4)."""
        params = {"advertiser_id": self.advertiser_id, "custom_audience_ids": json.dumps([str(audience_id)])}
        data = self._data(self._send("GET", self._url("dmp/custom_audience/get"), params=params))
        for item in data.get("list") or []:
            details = item.get("audience_details", item) if isinstance(item, dict) else None
            if isinstance(details, dict) and str(details.get("audience_id")) == str(audience_id):
                return details
        raise TikTokError(
            f"audience {audience_id} is not in TikTok's answer for advertiser {self.advertiser_id}"
        )

    def audiences_page(self, page: int = 1, page_size: int = 1) -> dict:
        """`GET /dmp/custom_audience/list/`: one page of the advertiser's audiences. Needs the same Audience
        Management permission as the writes, so it doubles as the startup probe (§1.4)."""
        params = {"advertiser_id": self.advertiser_id, "page": page, "page_size": page_size}
        return self._data(self._send("GET", self._url("dmp/custom_audience/list"), params=params))

    def create_lookalike(self, name: str, seed_audience_id: str, spec: dict) -> str:
        """`POST /dmp/custom_audience/lookalike/create/`; returns `data.custom_audience_id` (§1.8).

        `spec`: audience_size (NARROW/BALANCED/BROAD), location_ids, include_source, mobile_os, placements. The seed
        needs ≥ 100 users and cannot itself be a lookalike; TikTok checks both (code 40002)."""
        unknown = set(spec) - LOOKALIKE_KEYS
        if unknown:
            raise ValueError(
                f"unknown TikTok lookalike keys {sorted(unknown)}; use {', '.join(sorted(LOOKALIKE_KEYS))}"
            )
        if "audience_size" in spec and spec["audience_size"] not in LOOKALIKE_SIZES:
            raise ValueError(f"audience_size must be one of {LOOKALIKE_SIZES}, got {spec['audience_size']!r}")
        if "location_ids" in spec:
            locations = spec["location_ids"]
            if not isinstance(locations, list | tuple) or not locations:
                raise ValueError("location_ids must be a non-empty list of TikTok location ids")
            spec = {**spec, "location_ids": [str(location) for location in locations]}
        body = {
            "advertiser_id": self.advertiser_id,
            "custom_audience_name": _name(name),
            "lookalike_spec": {"source_audience_id": str(seed_audience_id), **spec},
        }
        data = self._data(self._send("POST", self._url("dmp/custom_audience/lookalike/create"), json=body))
        return str(data["custom_audience_id"])

    def _data(self, reply: Reply) -> dict:
        if reply.reason is not None:
            raise TikTokError(f"{reply.reason}: {self._clip(reply.message)}")
        envelope = _envelope(reply.response)
        status = reply.response.status_code
        if envelope is None:
            raise TikTokError(f"HTTP {status} without a TikTok envelope (a wrong path or method?)")
        if status != 200 or envelope.get("code") != OK:
            raise TikTokError(
                self._clip(
                    f"HTTP {status}, code {envelope.get('code')}: {envelope.get('message')} "
                    f"(request_id {envelope.get('request_id')})"
                )
            )
        data = envelope.get("data")
        return data if isinstance(data, dict) else {}

    # --- transport -------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.api_url}/{path.strip('/')}/"  # the trailing slash is part of every path (§1.1)

    def _clip(self, message: object) -> str | None:
        """`clip`, with the token masked too should TikTok ever echo it."""
        return None if message is None else clip(str(message).replace(self._token, "<token>"))

    def _send(self, method: str, url: str, **kwargs: object) -> Reply:
        """One logical request: throttles, TikTok-side errors, 5xx, timeouts retried; raises only for the token."""
        for attempt in range(1, self.max_retries + 2):
            response = None
            try:
                response = self._http.request(method, url, headers=self._headers, **kwargs)
            except httpx.TimeoutException as error:
                reason, message, wait = "timeout", type(error).__name__, self._backoff(attempt)
            except httpx.TransportError as error:
                reason, message, wait = "connection_error", type(error).__name__, self._backoff(attempt)
            else:
                code = _code(response)
                if code in AUTH_CODES or response.status_code == 401:
                    envelope = _envelope(response) or {}
                    raise TikTokAuthError(
                        f"TikTok refused the access token (HTTP {response.status_code}, code {code}: "
                        f"{self._clip(envelope.get('message'))}); check TIKTOK_ACCESS_TOKEN and that it is "
                        f"authorised for advertiser {self.advertiser_id} (TIKTOK_ADVERTISER_ID)."
                    )
                message = f"HTTP {response.status_code}, code {code}"
                if code in THROTTLE_CODES or response.status_code == 429:
                    reason = "throttled"
                    wait = self._retry_wait(response, attempt, reason, message)  # TikTok sends no Retry-After
                    if isinstance(wait, Reply):
                        return wait
                elif response.status_code >= 500 or _transient(code):
                    reason, wait = "server_error", self._backoff(attempt)
                else:
                    return Reply(response, attempt)
            if attempt > self.max_retries:
                return Reply(response, attempt, reason, f"{message} after {attempt} attempts")
            time.sleep(wait)
        raise AssertionError("unreachable")


def _transient(code: int | None) -> bool:
    return code is not None and (50000 <= code < 60000 or code in TRANSIENT_CODES)


def _envelope(response: httpx.Response | None) -> dict | None:
    """TikTok's `{"code", "message", "request_id", "data"}`, if the body is one."""
    if response is None:
        return None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and "code" in body else None


def _code(response: httpx.Response | None) -> int | None:
    code = (_envelope(response) or {}).get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("an audience name is required")
    if len(name) > NAME_CHARS:
        raise ValueError(f"TikTok audience names have at most {NAME_CHARS} characters, got {len(name)}")
    return name


def _check_rows(id_schema: tuple[str, ...] | list[str], rows: list[list[str]]) -> list[str]:
    """Refuse the whole call before anything is sent: unknown id types, misaligned or empty rows, non-hashes."""
    schema = list(id_schema)
    if not schema or len(set(schema)) != len(schema) or not set(schema) <= SHA256_ID_TYPES:
        raise ValueError(f"id_schema must be distinct values of {sorted(SHA256_ID_TYPES)}, got {schema!r}")
    for index, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != len(schema):
            raise ValueError(f"rows[{index}] does not have one value per id_schema position ({len(schema)})")
        if not any(row):
            raise ValueError(f"rows[{index}] has no identifier")
        for position, value in enumerate(row):
            if value != "" and not is_sha256_hex(value):
                raise ValueError(
                    f"rows[{index}] {schema[position]} is not a lowercase SHA-256 hex digest; normalize and hash "
                    "identifiers before sending (raw PII must never leave)"
                )
    return schema
