"""Destination plumbing for the sync stages: the three loopback sandboxes in their own process (so the client being
measured does not share a GIL with the servers), a wrapper that times each adapter call and counts what the
sandboxes received, and an adapter that acknowledges everything (for setting up acknowledged state untimed).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CREDENTIAL = "bench"
META_AD_ACCOUNT = "1234567890"
GOOGLE_ACCOUNT = {"accountType": "GOOGLE_ADS", "accountId": "1234567890"}
CUSTOMERIO_BATCH_ENVELOPE = len(b'{"batch":[') + len(b"]}")


class _Recorder:
    """Forwards to a sandbox and keeps (method, path, query, body size) of every request, plus the bodies while
    capturing is on."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, str, int, int]] = []
        self.bodies: list[dict] = []
        self.capture = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = self.sandbox.handle(request)
        with self.lock:
            self.log.append(
                (request.method, request.url.path, str(request.url.query, "ascii"), len(request.content),
                 response.status_code)
            )  # fmt: skip
            if self.capture and request.method != "GET":
                self.bodies.append(
                    {
                        "method": request.method,
                        "path": request.url.path,
                        "query": str(request.url.query, "ascii"),
                        "body": request.content.decode(),
                        "status": response.status_code,
                    }
                )
        return response


def _serve(conn, segment_names: list[str]) -> None:
    """The sandbox process: three loopback servers, answering commands on `conn` until told to stop."""
    from retention_pipeline.destinations.sandbox.customerio import CustomerIoSandbox
    from retention_pipeline.destinations.sandbox.google import GoogleDataManagerSandbox
    from retention_pipeline.destinations.sandbox.meta import MetaSandbox
    from retention_pipeline.sandbox.http import LoopbackServer

    sandboxes = {
        "customerio": CustomerIoSandbox(),
        "meta": MetaSandbox(ad_account_id=META_AD_ACCOUNT),
        "google": GoogleDataManagerSandbox(),
    }
    recorders = {name: _Recorder(sandbox) for name, sandbox in sandboxes.items()}
    servers = {name: LoopbackServer(recorder) for name, recorder in recorders.items()}
    routing = {
        "customerio": {s: str(sandboxes["customerio"].create_segment(s)) for s in segment_names},
        "meta": {s: sandboxes["meta"].create_audience(s) for s in segment_names},
        "google": {s: f"list-{s}" for s in segment_names},
    }
    conn.send({"urls": {name: server.url for name, server in servers.items()}, "routing": routing})
    while True:
        command, argument = conn.recv()
        if command == "count":
            conn.send(len(recorders[argument].log))
        elif command == "log":
            name, start, stop = argument
            with recorders[name].lock:
                conn.send(recorders[name].log[start:stop])
        elif command == "capture":
            for recorder in recorders.values():
                with recorder.lock:
                    recorder.capture, recorder.bodies = bool(argument), []
            conn.send(True)
        elif command == "bodies":
            out = {}
            for name, recorder in recorders.items():
                with recorder.lock:
                    out[name] = list(recorder.bodies)
            Path(argument).write_text(json.dumps(out))
            conn.send(True)
        elif command == "stop":
            for server in servers.values():
                server.close()
            conn.send(True)
            return


class SandboxProcess:
    """Customer.io, Meta and Google sandboxes on loopback ports in a child process."""

    def __init__(self, segment_names: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, segment_names), daemon=True)
        self._process.start()
        hello = self._conn.recv()
        self.urls: dict[str, str] = hello["urls"]
        self.routing_ids: dict[str, dict[str, str]] = hello["routing"]
        self._lock = threading.Lock()

    def _ask(self, command: str, argument=None):
        with self._lock:
            self._conn.send((command, argument))
            return self._conn.recv()

    def count(self, destination: str) -> int:
        return self._ask("count", destination)

    def log(self, destination: str, start: int, stop: int) -> list[tuple]:
        return self._ask("log", (destination, start, stop))

    def capture(self, on: bool) -> None:
        self._ask("capture", on)

    def dump_bodies(self, path: Path) -> dict[str, list[dict]]:
        self._ask("bodies", str(path))
        return json.loads(path.read_text())

    def close(self) -> None:
        if self._process.is_alive():
            self._ask("stop")
        self._process.join(10)

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def adapters(self, http: httpx.Client) -> dict:
        """The project's adapters and clients, pointed at the loopback sandboxes as the real services would be."""
        from retention_pipeline.destinations.adapters import CustomerIoAdapter, GoogleAdapter, MetaAdapter
        from retention_pipeline.destinations.customerio import CustomerIoClient
        from retention_pipeline.destinations.google import GoogleDataManagerClient
        from retention_pipeline.destinations.meta import MetaClient
        from retention_pipeline.destinations.routing import Routing

        routing = Routing(
            customerio_segments=self.routing_ids["customerio"],
            meta_audiences=self.routing_ids["meta"],
            meta_min_audience_floor=0,
            google_operating_account=GOOGLE_ACCOUNT,
            google_user_lists=self.routing_ids["google"],
            source="bench",
        )
        cio = CustomerIoClient(
            self.urls["customerio"],
            self.urls["customerio"],
            CREDENTIAL,
            CREDENTIAL,
            CREDENTIAL,
            http_client=http,
        )
        meta = MetaClient(
            graph_url=f"{self.urls['meta']}/v25.0",
            access_token=CREDENTIAL,
            ad_account_id=META_AD_ACCOUNT,
            http_client=http,
        )
        google = GoogleDataManagerClient(url=self.urls["google"], access_token=CREDENTIAL, http_client=http)
        return {
            "customerio": CustomerIoAdapter(cio, routing),
            "meta": MetaAdapter(meta, routing),
            "google": GoogleAdapter(google, routing),
        }


@dataclass
class SendRecord:
    """One adapter call: what the plan asked for, what reached the sandbox, how long it took."""

    segment: str
    destination: str
    adds: int
    removes: int
    updates: int
    seconds: float
    requests: list[tuple] = field(default_factory=list)  # (method, path, query, body bytes, status)
    adapter_requests: int = 0
    acked: int = 0

    @property
    def changes(self) -> int:
        return self.adds + self.removes + self.updates

    def expected_requests(self) -> int:
        """⌈changes / limit⌉ per kind of call, from the destinations' documented limits (not the adapter's own
        estimate): 10,000 rows per Meta/Google call (an update is a remove plus an add), 1,000 ids per Customer.io
        segment call, and for Customer.io's batch the 500 KB body limit over the bytes of ops actually sent."""
        from retention_pipeline.destinations.adapters import (
            AD_ROWS,
            CUSTOMERIO_BATCH_BYTES,
            CUSTOMERIO_SEGMENT_IDS,
        )

        if self.destination in ("meta", "google"):
            return math.ceil((self.adds + self.updates) / AD_ROWS) + math.ceil(
                (self.removes + self.updates) / AD_ROWS
            )
        batch = [r for r in self.requests if r[1].endswith("/api/v2/batch")]
        op_bytes = sum(r[3] - CUSTOMERIO_BATCH_ENVELOPE for r in batch)
        batches = math.ceil(op_bytes / (CUSTOMERIO_BATCH_BYTES - CUSTOMERIO_BATCH_ENVELOPE))
        # Every bench segment is mapped to a manual segment, so adds and removes also go to its membership calls.
        return (
            batches
            + math.ceil(self.adds / CUSTOMERIO_SEGMENT_IDS)
            + math.ceil(self.removes / CUSTOMERIO_SEGMENT_IDS)
        )

    def summary(self) -> dict:
        return {
            "segment": self.segment,
            "destination": self.destination,
            "adds": self.adds,
            "removes": self.removes,
            "updates": self.updates,
            "changes": self.changes,
            "requests": len(self.requests),
            "expected_requests": self.expected_requests(),
            "adapter_requests": self.adapter_requests,
            "request_bytes": sum(r[3] for r in self.requests),
            "non_2xx": sum(1 for r in self.requests if r[4] >= 300),
            "acked": self.acked,
            "seconds": round(self.seconds, 4),
        }


class TimedAdapter:
    """Wraps a project adapter: times `send` and collects the requests the sandbox received during it."""

    def __init__(self, inner, sandboxes: SandboxProcess, records: list[SendRecord]) -> None:
        self.inner, self.sandboxes, self.records = inner, sandboxes, records
        self.name, self.per_request_limit = inner.name, inner.per_request_limit

    def expected_requests(self, changes) -> int:
        return self.inner.expected_requests(changes)

    def send(self, segment, changes, context):
        before = self.sandboxes.count(self.name)
        started = time.perf_counter()
        result = self.inner.send(segment, changes, context)
        seconds = time.perf_counter() - started
        after = self.sandboxes.count(self.name)
        self.records.append(
            SendRecord(
                segment.name,
                self.name,
                sum(c.operation == "add" for c in changes),
                sum(c.operation == "remove" for c in changes),
                sum(c.operation == "update" for c in changes),
                seconds,
                self.sandboxes.log(self.name, before, after),
                len(result.requests),
                sum(1 for item in result.items if item.ok),
            )
        )
        return result


class AckAll:
    """A destination that acknowledges every change at once: sets up acknowledged state without any I/O."""

    per_request_limit = 10_000

    def __init__(self, name: str) -> None:
        self.name = name

    def expected_requests(self, changes) -> int:
        return math.ceil(len(changes) / self.per_request_limit)

    def send(self, segment, changes, context):
        from retention_pipeline.destinations.sync import ItemResult, RequestResult, SendResult

        request = RequestResult("ack", len(changes), ok=True, http_status=200)
        items = [ItemResult(c.member_key, c.operation, True, None, request.request_id) for c in changes]
        return SendResult(requests=[request], items=items)


def ack_all_adapters() -> dict:
    return {name: AckAll(name) for name in ("customerio", "meta", "google")}
