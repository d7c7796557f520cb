"""Customer.io client: Track v2 batch and manual-segment membership, reporting an outcome for every op and request.

The sync engine keeps a ledger, so nothing here hides a failure: an op too large to send, an op named in a 207, an
op isolated by bisecting a 400, and ops whose retries ran out all come back as failed results with a reason. Only
rejected credentials raise (every later request would fail the same way). Messages carry no secrets and no
payload values, and what Customer.io says back (reason, field, message) is redacted by `clip` before it is kept:
a refused op's error can quote the email it refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations._http import PooledClient, Reply, clip

# 500 KB and 32 KB read as decimal kilobytes: the stricter reading of the spec.
MAX_BATCH_BYTES = 500_000
MAX_OP_BYTES = 32_000
MAX_SEGMENT_IDS = 1000
SEGMENT_ID_TYPES = ("id", "email", "cio_id")
_BATCH_PREFIX, _BATCH_SUFFIX = b'{"batch":[', b"]}"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class CustomerIoAuthError(ConfigError):
    """Customer.io answered 401: the credentials are wrong for this host or region."""


class CustomerIoError(RuntimeError):
    """An App API or region call failed after retries (batch and segment calls report failures instead)."""


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one op of `batch()`, at the caller's index.

    `status` is the HTTP status that decided it (None: never sent), `request` the 1-based number of the HTTP
    request within the call that decided it, `attempts` how many times that request was sent.
    """

    index: int
    ok: bool
    status: int | None
    reason: str | None = None
    field: str | None = None
    message: str | None = None
    request: int | None = None
    attempts: int = 0


@dataclass(frozen=True)
class SegmentResult:
    """The outcome of one add/remove request: ids[start:stop] of the caller's list.

    ok means Customer.io accepted the request, not that anyone was added: unknown ids are dropped silently.
    """

    segment_id: str
    action: str
    id_type: str
    start: int
    stop: int
    ok: bool
    status: int | None
    reason: str | None = None
    message: str | None = None
    attempts: int = 0


def make_event_id(*parts: object, timestamp: float | None = None) -> str:
    """A ULID-shaped id (26 Crockford base32 chars) derived from the parts: retries of one event share its id.

    Parts are compared as strings, so `make_event_id(7, "x") == make_event_id("7", "x")`. With `timestamp`
    (unix seconds) the first 10 characters encode it as a real ULID would, so ids sort by event time.
    """
    if not parts:
        raise ValueError("make_event_id needs at least one part")
    canonical = json.dumps([str(p) for p in parts], ensure_ascii=False, separators=(",", ":"))
    value = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:16], "big")
    if timestamp is not None:
        millis = int(timestamp * 1000)
        if not 0 <= millis < 2**48:
            raise ValueError(f"timestamp {timestamp} is outside the ULID range")
        value = (millis << 80) | (value & (2**80 - 1))
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


class CustomerIoClient(PooledClient):
    """Track API (Basic: site id + Track key) for data, App API (Bearer App key) for segment bookkeeping."""

    def __init__(
        self,
        track_url: str,
        app_url: str,
        site_id: str,
        api_key: str,
        app_api_key: str | None = None,
        http_client: httpx.Client | None = None,
        max_retries: int = 5,
        requests_per_second: float | None = None,
        *,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        timeout_seconds: float = 30.0,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_op_bytes: int = MAX_OP_BYTES,
        max_segment_ids: int = MAX_SEGMENT_IDS,
    ) -> None:
        if not site_id or not api_key:
            raise ConfigError("Customer.io needs both CUSTOMERIO_SITE_ID and CUSTOMERIO_API_KEY.")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        if not 0 < max_op_bytes <= max_batch_bytes - len(_BATCH_PREFIX + _BATCH_SUFFIX):
            raise ValueError("max_op_bytes must be positive and fit in max_batch_bytes with the envelope")
        self.track_url = track_url.rstrip("/")
        self.app_url = app_url.rstrip("/")
        self.max_batch_bytes = max_batch_bytes
        self.max_op_bytes = max_op_bytes
        self.max_segment_ids = max_segment_ids
        self._track_auth = httpx.BasicAuth(site_id, api_key)
        self._app_api_key = app_api_key
        self._init_http(http_client, timeout_seconds, max_retries, backoff_seconds, max_backoff_seconds)
        self._interval = None if requests_per_second is None else 1.0 / requests_per_second
        self._next_slot = 0.0
        self._pace_lock = threading.Lock()

    # --- Track v2 batch --------------------------------------------------------------------------------------

    def batch(self, ops: list[dict]) -> list[BatchResult]:
        """Send ops through `POST /api/v2/batch` in as few requests as fit under the size limit, in order.

        Returns one result per op, in the caller's order. Ops are packed greedily without reordering, which is
        the fewest requests any order-preserving split can use (identify-then-event sequences stay in order).
        """
        results: list[BatchResult | None] = [None] * len(ops)
        encoded: list[tuple[int, bytes]] = []
        for index, op in enumerate(ops):
            try:
                body = json.dumps(op, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
            except (TypeError, ValueError) as error:
                results[index] = BatchResult(
                    index, False, None, "invalid_op", None, f"not JSON: {clip(error)}"
                )
                continue
            if not isinstance(op, dict):
                results[index] = BatchResult(
                    index, False, None, "invalid_op", None, "an op must be an object"
                )
            elif len(body) > self.max_op_bytes:
                message = f"op is {len(body)} bytes; the per-op limit is {self.max_op_bytes}"
                results[index] = BatchResult(index, False, None, "item_too_large", None, message)
            else:
                encoded.append((index, body))
        requests = itertools.count(1)
        for chunk in self._pack(encoded):
            self._send_batch(chunk, results, requests)
        return results  # type: ignore[return-value]  # every index was filled above or by _send_batch

    def _pack(self, encoded: list[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
        envelope = len(_BATCH_PREFIX) + len(_BATCH_SUFFIX)
        chunk: list[tuple[int, bytes]] = []
        size = envelope
        for item in encoded:
            added = len(item[1]) + (1 if chunk else 0)  # the comma
            if chunk and size + added > self.max_batch_bytes:
                yield chunk
                chunk, size, added = [], envelope, len(item[1])
            chunk.append(item)
            size += added
        if chunk:
            yield chunk

    def _send_batch(
        self, chunk: list[tuple[int, bytes]], results: list[BatchResult | None], requests: Iterator[int]
    ) -> None:
        content = _BATCH_PREFIX + b",".join(body for _, body in chunk) + _BATCH_SUFFIX
        number = next(requests)
        reply = self._send(
            "POST",
            f"{self.track_url}/api/v2/batch",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        status = reply.response.status_code if reply.response is not None else None

        def settle(position: int, ok: bool, **detail: str | None) -> None:
            index = chunk[position][0]
            results[index] = BatchResult(index, ok, status, request=number, attempts=reply.attempts, **detail)

        if reply.reason is not None:
            for position in range(len(chunk)):
                settle(position, False, reason=reply.reason, message=reply.message)
        elif status == 200:
            for position in range(len(chunk)):
                settle(position, True)
        elif status == 207:
            errors = _batch_errors(reply.response, len(chunk))
            for position in range(len(chunk)):
                if errors is None:
                    settle(
                        position,
                        False,
                        reason="unparseable_response",
                        message="207 without a usable errors list",
                    )
                elif position in errors:
                    settle(position, False, **errors[position])
                else:
                    settle(position, True)
        elif status == 400 and len(chunk) > 1:
            # The whole batch was refused; halve it until the refusing ops stand alone and the rest get through.
            half = len(chunk) // 2
            self._send_batch(chunk[:half], results, requests)
            self._send_batch(chunk[half:], results, requests)
        else:
            detail = _first_error(reply.response)
            for position in range(len(chunk)):
                settle(position, False, **detail)

    # --- Track: manual segments ------------------------------------------------------------------------------

    def segment_add(self, segment_id: int | str, ids: list[str], id_type: str = "id") -> list[SegmentResult]:
        """Add people to a manual segment, ≤ 1,000 ids a request; one result per request.

        Raises ValueError for an unknown `id_type` or an empty id (a caller bug, found before anything is sent).
        """
        return self._segment("add", segment_id, ids, id_type)

    def segment_remove(
        self, segment_id: int | str, ids: list[str], id_type: str = "id"
    ) -> list[SegmentResult]:
        """Remove people from a manual segment, ≤ 1,000 ids a request; one result per request."""
        return self._segment("remove", segment_id, ids, id_type)

    def _segment(
        self, action: str, segment_id: int | str, ids: list[str], id_type: str
    ) -> list[SegmentResult]:
        if id_type not in SEGMENT_ID_TYPES:
            raise ValueError(f"id_type must be one of {SEGMENT_ID_TYPES}, got {id_type!r}")
        bad = next((i for i, value in enumerate(ids) if not isinstance(value, str) or not value), None)
        if bad is not None:
            raise ValueError(f"ids[{bad}] is not a non-empty string")
        url = f"{self.track_url}/api/v1/segments/{quote(str(segment_id), safe='')}/{action}_customers"
        results = []
        for start in range(0, len(ids), self.max_segment_ids):
            chunk = ids[start : start + self.max_segment_ids]
            reply = self._send(
                "POST",
                url,
                params={"id_type": id_type},
                content=json.dumps({"ids": chunk}, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json"},
            )
            status = reply.response.status_code if reply.response is not None else None
            ok = reply.reason is None and status == 200
            if reply.reason is not None:
                reason, message = reply.reason, reply.message
            elif ok:
                reason = message = None
            else:
                reason = {404: "segment_not_found", 400: "invalid_request"}.get(status, f"http_{status}")
                message = _meta_message(reply.response)
            results.append(
                SegmentResult(
                    segment_id=str(segment_id),
                    action=action,
                    id_type=id_type,
                    start=start,
                    stop=start + len(chunk),
                    ok=ok,
                    status=status,
                    reason=reason,
                    message=message,
                    attempts=reply.attempts,
                )
            )
        return results

    # --- App API and account -------------------------------------------------------------------------------

    def account_region(self) -> dict:
        """`GET /api/v1/accounts/region`: which region and workspace the Track credentials belong to."""
        return self._checked(self._send("GET", f"{self.track_url}/api/v1/accounts/region"))

    def create_segment(self, name: str, description: str = "") -> dict:
        """A new, empty manual segment (App API); returns the segment object, whose `id` the segment calls take."""
        reply = self._send(
            "POST",
            f"{self.app_url}/v1/segments",
            app=True,
            json={"segment": {"name": name, "description": description}},
        )
        return self._checked(reply)["segment"]

    def segment_customer_count(self, segment_id: int | str) -> int:
        """How many people the segment holds: the only proof that a 200 from add_customers added anyone."""
        url = f"{self.app_url}/v1/segments/{quote(str(segment_id), safe='')}/customer_count"
        return int(self._checked(self._send("GET", url, app=True))["count"])

    @staticmethod
    def _checked(reply: Reply) -> dict:
        if reply.reason is not None:
            raise CustomerIoError(f"{reply.reason}: {reply.message}")
        response = reply.response
        if response.status_code != 200:
            raise CustomerIoError(
                f"{response.request.url.path} → HTTP {response.status_code}: {_meta_message(response)}"
            )
        return response.json()

    # --- transport -------------------------------------------------------------------------------------------

    def _send(self, method: str, url: str, *, app: bool = False, **kwargs: object) -> Reply:
        """One logical request: retried on 429, 5xx, timeouts and connection errors; raises only on 401.

        `app` switches from Track (Basic) to App API (Bearer) credentials.
        """
        if app:
            if not self._app_api_key:
                raise ConfigError("This call uses the Customer.io App API; set CUSTOMERIO_APP_API_KEY.")
            kwargs["headers"] = {"Authorization": f"Bearer {self._app_api_key}"}
        else:
            kwargs["auth"] = self._track_auth
        for attempt in range(1, self.max_retries + 2):
            self._pace()
            response = None
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TimeoutException as error:
                reason, message, wait = "timeout", type(error).__name__, self._backoff(attempt)
            except httpx.TransportError as error:
                reason, message, wait = "connection_error", type(error).__name__, self._backoff(attempt)
            else:
                status = response.status_code
                if status == 401:
                    settings = (
                        "CUSTOMERIO_APP_API_KEY"
                        if app
                        else "CUSTOMERIO_SITE_ID, CUSTOMERIO_API_KEY and CUSTOMERIO_REGION"
                    )
                    raise CustomerIoAuthError(
                        f"Customer.io rejected the credentials at {httpx.URL(url).host} (401); check {settings}."
                    )
                if status != 429 and status < 500:
                    return Reply(response, attempt)
                reason = "rate_limited" if status == 429 else "server_error"
                message = f"HTTP {status}"
                wait = self._retry_wait(response, attempt, reason, message)
                if isinstance(wait, Reply):
                    return wait
            if attempt > self.max_retries:
                return Reply(response, attempt, reason, f"{message} after {attempt} attempts")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _pace(self) -> None:
        if self._interval is None:
            return
        with self._pace_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + self._interval
        if wait > 0:
            time.sleep(wait)


def _batch_errors(response: httpx.Response, size: int) -> dict[int, dict[str, str | None]] | None:
    """207 body → {position in the request: detail}; None when the body cannot be trusted."""
    try:
        errors = response.json()["errors"]
        parsed = {}
        for error in errors:
            position = error["batch_index"]
            if not isinstance(position, int) or not 0 <= position < size:
                return None
            parsed[position] = {
                "reason": clip(error.get("reason") or "invalid"),
                "field": clip(error.get("field") or None),
                "message": clip(error.get("message")),
            }
    except (ValueError, KeyError, TypeError):
        return None
    return parsed or None


def _first_error(response: httpx.Response) -> dict[str, str | None]:
    """Detail for a refused request: the v2 `errors[0]`, else the status."""
    try:
        error = response.json()["errors"][0]
        return {
            "reason": clip(error.get("reason") or "invalid_request"),
            "field": clip(error.get("field") or None),
            "message": clip(error.get("message")),
        }
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {"reason": f"http_{response.status_code}", "field": None, "message": None}


def _meta_message(response: httpx.Response) -> str | None:
    """Track v1 and App API errors: `{"meta": {"errors": [...]}}` or `{"meta": {"error": "..."}}`."""
    try:
        meta = response.json()["meta"]
        errors = meta.get("errors") or [meta.get("error")]
        return clip("; ".join(str(e) for e in errors if e))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
