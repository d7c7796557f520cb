"""Recording sandboxes of the destination APIs, and the plumbing they share (faults, request log, rate limit).

Each sandbox is one function from `httpx.Request` to `httpx.Response`, so the same code answers in-process
(`transport()`) and on a loopback port (`serve()`), like the Metronome sandbox. They enforce the vendors' limits
and keep what they accepted, so tests assert on the destination's state rather than on the client's intentions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

import httpx

from retention_pipeline.sandbox.http import FaultInjector, LoopbackServer, RecordedRequest


class RecordingSandbox:
    """Faults first, then the optional rate limit, then the vendor's own handling; every request is logged."""

    def __init__(self, requests_per_second: float | None = None) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self.faults = FaultInjector()
        self.requests: list[RecordedRequest] = []
        self.requests_per_second = requests_per_second
        self._lock = threading.RLock()
        self._recent: deque[float] = deque()

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        response = self.faults.take(request.method, path)
        if response is None and self._over_rate_limit():
            response = self._rate_limited()
        if response is None:
            with (
                self._lock
            ):  # one request at a time: state changes stay atomic per request, as a test expects
                response = self._respond(request)
        with self._lock:
            self.requests.append(RecordedRequest.of(request, response.status_code))
        return response

    def transport(self) -> httpx.BaseTransport:
        return httpx.MockTransport(self.handle)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> LoopbackServer:
        return LoopbackServer(self, host, port)

    def _respond(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def _rate_limited(self) -> httpx.Response:
        raise NotImplementedError

    def _over_rate_limit(self) -> bool:
        """Sliding one-second window; requests refused by the limit do not count against it."""
        if self.requests_per_second is None:
            return False
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.requests_per_second:
                return True
            self._recent.append(now)
            return False


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"Content-Type": "application/json", **(headers or {})},
        content=json.dumps(payload, separators=(",", ":")).encode(),
    )


def json_body(request: httpx.Request) -> object:
    """The parsed JSON body; raises ValueError (the sandboxes turn it into the vendor's 400) when it is not JSON."""
    try:
        return json.loads(request.content or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("Request body is not valid JSON") from None
