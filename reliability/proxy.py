"""A loopback HTTP proxy that sits between a pipeline client and a sandbox and misbehaves on purpose.

The sandboxes' own `faults.add(...)` answer canned statuses; this proxy adds what a canned answer cannot do:
stall a chosen request past the client's timeout, reset its TCP connection (before or after the sandbox applied
it), rewrite a real response (malformed JSON, missing fields, unknown enum values, a page that repeats the previous
page's rows, an empty page that still carries a cursor) and record every request body, so the suite can prove what
left the process. Rules match on method, path, query and JSON body; each fires a limited number of times.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass
class Exchange:
    """One request as the proxy saw it, and what it did with it."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    status: int | None  # None: no answer (stalled or reset)
    action: str  # "forward", or the rule's action
    started: float

    def json(self) -> object:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


@dataclass
class Rule:
    """What to do with matching requests.

    action: "status" (answer `status`/`body`/`headers` without forwarding), "stall" (hold the connection `seconds`,
    then close it; `forward_first` sends it upstream before stalling, so the server applied it), "reset" (TCP RST;
    `forward_first` likewise), "rewrite" (forward, then `rewrite(request, status, payload) -> (status, payload)`
    on the JSON answer, or None to pass it through uncounted), "forward_as" (forward `retarget(request) ->
    (path?query, body)` instead of the request as received), "respond" (`respond(request) -> (status, payload)` without forwarding).
    """

    action: str
    method: str | None = None
    path: str = ""
    when: Callable[[Exchange], bool] | None = None
    times: int = 1
    status: int = 500
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    forward_first: bool = False
    rewrite: Callable[[Exchange, int, object], tuple[int, object] | None] | None = None
    respond: Callable[[Exchange], tuple[int, object]] | None = None
    retarget: Callable[[Exchange], tuple[str, bytes]] | None = None  # "forward_as": the request actually sent
    counted: bool = (
        True  # False: a helper of another rule (e.g. setting up a cursor), not an injection itself
    )
    fired: int = 0

    def matches(self, exchange: Exchange) -> bool:
        return (
            self.fired < self.times
            and self.method in (None, exchange.method)
            and re.search(self.path, exchange.path) is not None
            and (self.when is None or self.when(exchange))
        )


class FaultProxy:
    """`FaultProxy(upstream_url)`; point the client at `.url`. Thread-safe; `close()` frees the port."""

    def __init__(self, upstream: str, *, page_limits: dict[str, int] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        # Smaller pages than the client asks for (path regex → limit), so small tenants still page.
        self.page_limits = dict(page_limits or {})
        self.exchanges: list[Exchange] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64))
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    # --- rules -----------------------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def injected(self) -> int:
        """How many requests a rule acted on since the last `clear()`."""
        with self._lock:
            return sum(r.fired for r in self._rules if r.counted)

    def _take(self, exchange: Exchange) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(exchange):
                    rule.fired += 1
                    return rule
        return None

    def count(self, predicate: Callable[[Exchange], bool] = lambda e: True) -> int:
        with self._lock:
            return sum(1 for e in self.exchanges if predicate(e))

    def close(self) -> None:
        self._server.shutdown()
        with self._server.connections_lock:
            for connection in list(self._server.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()
        self._client.close()

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _limited(self, exchange: Exchange, target: str, body: bytes) -> tuple[str, bytes]:
        """Rewrite `limit` (query or JSON body) down to the configured page size for this path."""
        limit = next(
            (n for pattern, n in self.page_limits.items() if re.search(pattern, exchange.path)), None
        )
        if limit is None:
            return target, body
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if "limit" in query:
            query["limit"] = str(min(int(query["limit"]), limit))
            target = f"{parts.path}?{urlencode(query)}"
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        if isinstance(payload, dict) and exchange.method == "POST" and "limit" in payload:
            payload["limit"] = min(int(payload["limit"]), limit)
            body = json.dumps(payload).encode()
        return target, body

    def forward(
        self, exchange: Exchange, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> httpx.Response:
        target, body = self._limited(exchange, target, exchange.body if body is None else body)
        return self._client.request(
            exchange.method, self.upstream + target, headers=headers, content=body or None
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request, client_address) -> None:
        """A client killed mid-request (the point of several scenarios) is not an error of the proxy."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Silent: every exchange is recorded in `FaultProxy.exchanges`."""

    def _dispatch(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        exchange = Exchange(
            self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)), body, None,
            "forward", time.monotonic(),
        )  # fmt: skip
        with proxy._lock:
            proxy.exchanges.append(exchange)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"accept-encoding"}}
        rule = proxy._take(exchange)
        try:
            if rule is None:
                self._relay(exchange, proxy.forward(exchange, self.path, headers))
                return
            exchange.action = rule.action
            if rule.action == "status":
                body_out = (
                    rule.body if rule.body is not None else json.dumps({"message": "injected"}).encode()
                )
                self._answer(
                    exchange, rule.status, {"Content-Type": "application/json", **rule.headers}, body_out
                )
            elif rule.action in ("stall", "reset"):
                if rule.forward_first:
                    proxy.forward(exchange, self.path, headers)
                if rule.action == "stall":
                    time.sleep(rule.seconds)
                self._reset()
            elif rule.action == "forward_as":
                target, body = rule.retarget(exchange)
                self._relay(exchange, proxy.forward(exchange, target, headers, body))
            elif rule.action == "respond":
                status, payload = rule.respond(exchange)
                self._answer(exchange, status, {"Content-Type": "application/json"}, _encode(payload))
            elif rule.action == "rewrite":
                response = proxy.forward(exchange, self.path, headers)
                try:
                    payload = response.json()
                except ValueError:
                    self._relay(exchange, response)
                    return
                rewritten = rule.rewrite(exchange, response.status_code, copy.deepcopy(payload))
                if rewritten is None:  # nothing to change in this answer: it does not count as an injection
                    with proxy._lock:
                        rule.fired -= 1
                    exchange.action = "forward"
                    self._relay(exchange, response)
                    return
                status, payload = rewritten
                out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
                self._answer(exchange, status, out, _encode(payload))
            else:
                raise ValueError(f"unknown proxy action {rule.action!r}")
        except httpx.HTTPError as error:  # the upstream itself failed: say so, as a gateway would
            self._answer(exchange, 502, {"Content-Type": "text/plain"}, f"upstream: {error}".encode())

    def _relay(self, exchange: Exchange, response: httpx.Response) -> None:
        out = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
        self._answer(exchange, response.status_code, out, response.content)

    def _answer(self, exchange: Exchange, status: int, headers: dict[str, str], body: bytes) -> None:
        exchange.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), the way a crashed middlebox does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


def _encode(payload: object) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()
