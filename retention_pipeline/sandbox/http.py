"""HTTP plumbing every sandbox shares (the Metronome tenant and the destinations): canned faults, a request log
entry, and a loopback server that adapts raw HTTP to a sandbox's `handle(httpx.Request) -> httpx.Response`."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import httpx


class Handler(Protocol):
    def handle(self, request: httpx.Request) -> httpx.Response: ...


@dataclass(frozen=True)
class RecordedRequest:
    """One handled request, for tests that assert on what a client actually sent."""

    method: str
    path: str
    query: dict
    status: int

    @classmethod
    def of(cls, request: httpx.Request, status: int) -> RecordedRequest:
        """The log entry for `request` answered with `status` (a repeated query parameter becomes a list)."""
        params = request.url.params
        query = {k: params[k] if len(params.get_list(k)) == 1 else params.get_list(k) for k in params}
        return cls(request.method, request.url.path, query, status)


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    status: int
    method: str | None
    remaining: int
    headers: dict[str, str]
    body: bytes


class FaultInjector:
    """Canned failures that answer before normal handling, each for a limited number of matching requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []

    def add(
        self,
        path: str,
        status: int = 429,
        *,
        method: str | None = None,
        times: int = 1,
        headers: dict | None = None,
        body: bytes | dict | None = None,
    ) -> None:
        """Answer the next `times` requests whose URL path matches the regex `path` with `status`.

        A 429 always names its rate-limit type (`client` unless `headers` says otherwise); `Retry-After` is sent
        only when given, so tests can exercise both the header and the SDK's own backoff.
        """
        fault_headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if status == 429 and not any(k.lower() == "x-metronome-rate-limit-type" for k in fault_headers):
            fault_headers["X-Metronome-Rate-Limit-Type"] = "client"
        if body is None:
            try:
                body = {"message": HTTPStatus(status).phrase}
            except ValueError:
                body = {"message": f"Error {status}"}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        fault = _Fault(
            re.compile(path), status, method.upper() if method else None, times, fault_headers, content
        )
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> httpx.Response | None:
        with self._lock:
            for fault in self._faults:
                if fault.pattern.search(path) and fault.method in (None, method):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    headers = {"Content-Type": "application/json", **fault.headers}
                    return httpx.Response(fault.status, headers=headers, content=fault.body)
        return None


class LoopbackServer:
    """A `ThreadingHTTPServer` in a daemon thread that adapts raw HTTP to a sandbox's `handle`."""

    def __init__(self, sandbox: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        server_class = _IPv6Server if ":" in host else _Server
        self._server = server_class((host, port), _RequestHandler)
        self._server.sandbox = sandbox
        self._server.connections = set()
        self._server.connections_lock = threading.Lock()
        bound_port = self._server.server_address[1]
        self.url = f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, drop idle keep-alive connections, and release the port."""
        self._server.shutdown()
        with self._server.connections_lock:
            connections = list(self._server.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the client may have closed it already
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sandbox: Handler
    connections: set[socket.socket]
    connections_lock: threading.Lock


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the SDK's connection pool is exercised as in production
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes; without this, Nagle plus delayed ACK adds ~40 ms per response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        host, port = self.server.server_address[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{self.path}"
        request = httpx.Request(self.command, url, headers=list(self.headers.items()), content=body)
        response = self.server.sandbox.handle(request)
        content = response.content
        self.send_response(response.status_code)
        for name, value in response.headers.multi_items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the sandbox records requests itself (`MetronomeSandbox.requests`)."""


# --- wire helpers ------------------------------------------------------------------------------------------------
