"""Pinterest customer lists and audiences (REST API v5): hashed emails in, one result per request.

A customer list holds SHA-256 email hashes; `PATCH …/customer_lists/{id}` adds or removes them (`records` is ONE
comma-separated string, not a JSON array). A list only becomes targetable through an audience of type
CUSTOMER_LIST, created once per list; lookalikes ("actalikes") are seeded by that audience, never by the list.

Pinterest documents no records-per-request cap: requests carry at most `batch_records` hashes (default 10,000)
and stay under 1 MB, the thresholds its integrators use. Every record must already be a SHA-256 lowercase hex
digest: the client refuses anything else before sending, so raw PII cannot leave through a caller's mistake
(Pinterest itself would accept plaintext emails). 429 (code 8), 5xx and transport errors are retried with backoff
(Retry-After honoured when present; Pinterest documents only `x-ratelimit-*` headers); a rejected token raises
`PinterestAuthError`; any other error comes back on the request's result, its message redacted by `clip`.

Creating a list or an audience is not idempotent (a retried POST whose first answer was lost makes a second one), so
those are retried only when the request cannot have taken effect: 429 and connection failures. ADD and REMOVE are
set operations, so membership requests are retried on every transient failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations._http import PooledClient, Reply, clip
from retention_pipeline.destinations.identity import is_sha256_hex

PINTEREST_URL = "https://api.pinterest.com/v5"
MAX_RECORDS = 10_000
# Under 1 MB per body (Pinterest documents no limit; Tealium flushes at 10,000 records or 1 MB). A record is 64 hex
# characters and a comma; the rest of the body is a few dozen bytes.
MAX_BODY_BYTES = 1_000_000
_RECORD_BYTES = 65
_BODY_OVERHEAD = 200
MAX_BODY_RECORDS = (MAX_BODY_BYTES - _BODY_OVERHEAD) // _RECORD_BYTES
OPERATIONS = ("ADD", "REMOVE")
AUTH_STATUSES = frozenset({401, 403})
RATE_LIMIT_CODE = 8
AUDIENCE_PAGE_SIZE = 250  # the API's maximum page_size


class PinterestAuthError(ConfigError):
    """Pinterest rejected the token (401 code 2) or refused the operation (403 code 3: scope, 29: not permitted)."""


class PinterestError(RuntimeError):
    """A list, audience or account call failed (membership calls report failures on their results instead)."""


@dataclass(frozen=True)
class PinterestResult:
    """The outcome of one `PATCH …/customer_lists/{id}` request: records[start:stop] of the caller's list.

    The counters are Pinterest's running totals for the list; they grow with every upload (even of records already
    in the list, or removals of records that were never in it), so they are not a membership count."""

    customer_list_id: str
    operation: str
    start: int
    stop: int
    ok: bool
    status: int | None
    code: int | None = None
    message: str | None = None
    reason: str | None = None
    attempts: int = 0
    list_status: str | None = None
    num_uploaded_user_records: int | None = None
    num_removed_user_records: int | None = None


class PinterestClient(PooledClient):
    """REST API v5 for one ad account, with a user OAuth token (scopes ads:read and ads:write) sent as Bearer."""

    def __init__(
        self,
        *,
        url: str = PINTEREST_URL,
        access_token: str,
        ad_account_id: str,
        http_client: httpx.Client | None = None,
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 120.0,
        timeout_seconds: float = 60.0,
        batch_records: int = MAX_RECORDS,
    ) -> None:
        if not access_token:
            raise ConfigError("Pinterest needs PINTEREST_ACCESS_TOKEN.")
        account = str(ad_account_id)
        if not (account.isascii() and account.isdigit() and len(account) <= 18):
            raise ConfigError(f"PINTEREST_AD_ACCOUNT_ID={ad_account_id!r} is not a numeric ad account id.")
        if batch_records < 1:
            raise ValueError(f"batch_records must be >= 1, got {batch_records}")
        self.url = url.rstrip("/")
        self.ad_account_id = account
        self.per_request = min(batch_records, MAX_BODY_RECORDS)
        self._account_url = f"{self.url}/ad_accounts/{account}"
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._init_http(http_client, timeout_seconds, max_retries, backoff_seconds, max_backoff_seconds)

    # --- membership ------------------------------------------------------------------------------------------

    def add(self, customer_list_id: str, records: Sequence[str]) -> list[PinterestResult]:
        """`PATCH` with `operation_type: ADD` in requests of ≤ per_request hashes; one result per request."""
        return self._update(customer_list_id, "ADD", records)

    def remove(self, customer_list_id: str, records: Sequence[str]) -> list[PinterestResult]:
        """`PATCH` with `operation_type: REMOVE`, chunked like `add`."""
        return self._update(customer_list_id, "REMOVE", records)

    def _update(self, customer_list_id: str, operation: str, records: Sequence[str]) -> list[PinterestResult]:
        _check_records(records)
        url = self._list_url(customer_list_id)
        results = []
        for start in range(0, len(records), self.per_request):
            chunk = records[start : start + self.per_request]
            body = {"operation_type": operation, "records": ",".join(chunk)}
            reply = self._send("PATCH", url, json=body)
            results.append(self._result(reply, str(customer_list_id), operation, start, len(chunk)))
        return results

    @staticmethod
    def _result(reply: Reply, list_id: str, operation: str, start: int, size: int) -> PinterestResult:
        response = reply.response
        base = {
            "customer_list_id": list_id,
            "operation": operation,
            "start": start,
            "stop": start + size,
            "status": response.status_code if response is not None else None,
            "attempts": reply.attempts,
        }
        if reply.reason is None and response.status_code < 300:
            try:
                body = response.json()
                return PinterestResult(
                    **base,
                    ok=True,
                    list_status=body.get("status"),
                    num_uploaded_user_records=body.get("num_uploaded_user_records"),
                    num_removed_user_records=body.get("num_removed_user_records"),
                )
            except (ValueError, AttributeError):
                return PinterestResult(**base, ok=False, reason="unparseable_response")
        error = _error(response) or {}
        return PinterestResult(
            **base,
            ok=False,
            code=error.get("code"),
            reason=reply.reason or "pinterest_error",
            message=clip(reply.message if reply.reason else error.get("message")),
        )

    # --- customer lists ----------------------------------------------------------------------------------------

    def create_customer_list(self, name: str, records: Sequence[str]) -> dict:
        """`POST …/customer_lists` (list_type EMAIL) from its first records; returns the CustomerList.

        Pinterest requires `records` at creation, so a list is created from real members, never placeholders."""
        if not records:
            raise ValueError(
                "Pinterest creates a customer list from its first records; pass at least one hashed email "
                "(placeholder people are never sent)"
            )
        if len(records) > self.per_request:
            raise ValueError(f"create a list from at most {self.per_request} records, then add the rest")
        _check_records(records)
        body = {"name": name, "records": ",".join(records), "list_type": "EMAIL"}
        return self._checked(
            self._send("POST", f"{self._account_url}/customer_lists", json=body, idempotent=False)
        )

    def customer_list(self, customer_list_id: str) -> dict:
        """`GET …/customer_lists/{id}`: status (PROCESSING, READY, TOO_SMALL, UPLOADING) and upload counters."""
        return self._checked(self._send("GET", self._list_url(customer_list_id)))

    # --- audiences ---------------------------------------------------------------------------------------------

    def create_audience(self, name: str, customer_list_id: str, description: str = "") -> dict:
        """`POST …/audiences` of type CUSTOMER_LIST: what makes the list targetable (once per list)."""
        body = {
            "name": name,
            "audience_type": "CUSTOMER_LIST",
            "rule": {"customer_list_id": str(customer_list_id)},
        }
        if description:
            body["description"] = description
        return self._checked(
            self._send("POST", f"{self._account_url}/audiences", json=body, idempotent=False)
        )

    def audience(self, audience_id: str) -> dict:
        """`GET …/audiences/{id}`: `size` (matched Pinterest accounts, nullable) and `status`."""
        return self._checked(
            self._send("GET", f"{self._account_url}/audiences/{quote(str(audience_id), safe='')}")
        )

    def audiences(self) -> Iterator[dict]:
        """Every audience of the ad account, page by page (`bookmark`)."""
        bookmark = None
        while True:
            params = {"page_size": AUDIENCE_PAGE_SIZE} | ({"bookmark": bookmark} if bookmark else {})
            page = self._checked(self._send("GET", f"{self._account_url}/audiences", params=params))
            yield from page.get("items") or []
            bookmark = page.get("bookmark")
            if not bookmark:
                return

    def customer_lists(self) -> Iterator[dict]:
        """Every customer list of the ad account, page by page (`bookmark`)."""
        bookmark = None
        while True:
            params = {"page_size": AUDIENCE_PAGE_SIZE} | ({"bookmark": bookmark} if bookmark else {})
            page = self._checked(self._send("GET", f"{self._account_url}/customer_lists", params=params))
            yield from page.get("items") or []
            bookmark = page.get("bookmark")
            if not bookmark:
                return

    def audience_for_list(self, customer_list_id: str) -> dict | None:
        """The CUSTOMER_LIST audience whose rule names this list, or None when none was created yet."""
        wanted = str(customer_list_id)
        for audience in self.audiences():
            rule = audience.get("rule") or {}
            if (
                audience.get("audience_type") == "CUSTOMER_LIST"
                and str(rule.get("customer_list_id")) == wanted
            ):
                return audience
        return None

    def create_actalike(
        self, name: str, seed_audience_ids: Sequence[str], *, country: str = "US", percentage: int = 1
    ) -> dict:
        """`POST …/audiences` of type ACTALIKE seeded by audiences (READY, ≥ 100 matched); returns the Audience."""
        if isinstance(percentage, bool) or not isinstance(percentage, int) or not 1 <= percentage <= 10:
            raise ValueError(f"percentage must be an integer 1-10, got {percentage!r}")
        if not seed_audience_ids:
            raise ValueError("an actalike needs at least one seed audience id")
        body = {
            "name": name,
            "audience_type": "ACTALIKE",
            "rule": {
                "seed_id": [str(s) for s in seed_audience_ids],
                "country": str(country).upper(),
                "percentage": percentage,
            },
        }
        return self._checked(
            self._send("POST", f"{self._account_url}/audiences", json=body, idempotent=False)
        )

    # --- account -----------------------------------------------------------------------------------------------

    def ad_account(self) -> dict:
        """`GET /ad_accounts/{id}`: proves the token can see the ad account (used as a startup probe)."""
        return self._checked(self._send("GET", self._account_url))

    # --- transport ---------------------------------------------------------------------------------------------

    def _list_url(self, customer_list_id: str) -> str:
        return f"{self._account_url}/customer_lists/{quote(str(customer_list_id), safe='')}"

    @staticmethod
    def _checked(reply: Reply) -> dict:
        if reply.reason is not None:
            raise PinterestError(f"{reply.reason}: {reply.message}")
        response = reply.response
        if response.status_code >= 300:
            error = _error(response) or {}
            raise PinterestError(
                f"HTTP {response.status_code}, code {error.get('code')}: {clip(error.get('message'))}"
            )
        try:
            return response.json()
        except ValueError:
            raise PinterestError(f"HTTP {response.status_code}: the answer is not JSON") from None

    def _send(self, method: str, url: str, *, idempotent: bool = True, **kwargs: object) -> Reply:
        """One logical request with retries (see the module docstring); raises only for the token."""
        for attempt in range(1, self.max_retries + 2):
            response = None
            try:
                response = self._http.request(method, url, headers=self._headers, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                reason, message, wait = "connection_error", type(error).__name__, self._backoff(attempt)
            except httpx.TimeoutException as error:
                if not idempotent:  # the request may have landed: a retry could create a second object
                    return Reply(None, attempt, "timeout", type(error).__name__)
                reason, message, wait = "timeout", type(error).__name__, self._backoff(attempt)
            except httpx.TransportError as error:
                if not idempotent:
                    return Reply(None, attempt, "connection_error", type(error).__name__)
                reason, message, wait = "connection_error", type(error).__name__, self._backoff(attempt)
            else:
                status = response.status_code
                code = (_error(response) or {}).get("code")
                if status in AUTH_STATUSES:
                    raise _auth_error(status, code)
                if status == 429 or code == RATE_LIMIT_CODE:
                    reason, message = "rate_limited", f"HTTP {status}, code {code}{_rate_headers(response)}"
                elif status >= 500 and idempotent:
                    reason, message = "server_error", f"HTTP {status}, code {code}"
                else:
                    return Reply(response, attempt)
                wait = self._retry_wait(response, attempt, reason, message)
                if isinstance(wait, Reply):
                    return wait
            if attempt > self.max_retries:
                return Reply(response, attempt, reason, f"{message} after {attempt} attempts")
            time.sleep(wait)
        raise AssertionError("unreachable")


def _check_records(records: Sequence[str]) -> None:
    """Refuse the whole call before anything is sent when a record is not a SHA-256 hex digest."""
    if isinstance(records, str):
        raise ValueError("records must be a sequence of hashes, not one string")
    for index, record in enumerate(records):
        if not is_sha256_hex(record):
            raise ValueError(
                f"records[{index}] is not a SHA-256 lowercase hex digest; normalize and hash emails before "
                "sending (raw PII must never leave)"
            )


def _auth_error(status: int, code: int | None) -> PinterestAuthError:
    if status == 401:
        why = "rejected the access token"
        fix = "check PINTEREST_ACCESS_TOKEN (a user OAuth token; it may have expired)"
    else:
        why = "refused the operation"
        fix = (
            "check that PINTEREST_ACCESS_TOKEN has the ads:read and ads:write scopes and may manage "
            "PINTEREST_AD_ACCOUNT_ID"
        )
    return PinterestAuthError(f"Pinterest {why} (HTTP {status}, code {code}); {fix}.")


def _error(response: httpx.Response | None) -> dict | None:
    """Pinterest's error body `{"code": int, "message": str}`, if the answer holds one."""
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "code" in body else None


def _rate_headers(response: httpx.Response) -> str:
    """The `x-ratelimit-*` headers for the message (their exact semantics are not documented)."""
    found = [
        f"{name}={response.headers[name]}"
        for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
        if name in response.headers
    ]
    return f" ({', '.join(found)})" if found else ""
