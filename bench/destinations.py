"""Destination plumbing for the sync stages: the loopback sandboxes of every registered destination (Customer.io,
Meta, Google, TikTok, Pinterest) in their own process (so the client being measured does not share a GIL with the
servers), a wrapper that times each adapter call and counts what the sandboxes received, and an adapter that
acknowledges everything (for setting up acknowledged state untimed).

Every segment's object exists before the sync, as when destinations.yaml lists its id: audiences, user lists,
manual segments and customer lists are created in the sandbox process, so the requests counted are membership
requests only. (Pinterest creates a list only from records: the bench creates each list from one placeholder hash
and removes it again before anything is measured.)
"""

from __future__ import annotations

import hashlib
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
TIKTOK_ADVERTISER = "7000000000000000001"
PINTEREST_AD_ACCOUNT = "549756359984"
CUSTOMERIO_BATCH_ENVELOPE = len(b'{"batch":[') + len(b"]}")
DESTINATIONS = ("customerio", "meta", "google", "tiktok", "pinterest")
# Seeds each Pinterest list (created from records only), then removed before anything is measured.
PLACEHOLDER = hashlib.sha256(b"bench-placeholder@example.invalid").hexdigest()


def limit(destination: str) -> int:
    """Rows (ids, records) per request the destination documents (or the project chose), from the registry: Meta
    and Google 10,000 rows, TikTok 1,000 rows (TIKTOK_BATCH_ROWS' default), Pinterest 10,000 records
    (PINTEREST_BATCH_RECORDS' default)."""
    from retention_pipeline.destinations import registry

    return registry.spec(destination).per_request_limit


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


def _pinterest_list(sandbox, name: str) -> str:
    """A customer list in the sandbox, empty again: created from a placeholder hash (Pinterest needs records) and
    that hash removed, through the project's client on the sandbox's in-process transport (not recorded)."""
    from retention_pipeline.destinations.pinterest.client import PinterestClient

    with PinterestClient(
        url="http://pinterest.bench.invalid/v5", access_token=CREDENTIAL, ad_account_id=PINTEREST_AD_ACCOUNT,
        http_client=httpx.Client(transport=sandbox.transport()),
    ) as client:  # fmt: skip
        list_id = str(client.create_customer_list(name, [PLACEHOLDER])["id"])
        if not all(r.ok for r in client.remove(list_id, [PLACEHOLDER])) or sandbox.members(list_id):
            raise RuntimeError(f"could not empty the bench's Pinterest list {list_id}")
    return list_id


def _serve(conn, segment_names: list[str]) -> None:
    """The sandbox process: one loopback server per destination, answering commands on `conn` until told to
    stop."""
    from retention_pipeline.sandbox.customerio import CustomerIoSandbox
    from retention_pipeline.sandbox.google import GoogleDataManagerSandbox
    from retention_pipeline.sandbox.http import LoopbackServer
    from retention_pipeline.sandbox.meta import MetaSandbox
    from retention_pipeline.sandbox.pinterest import PinterestSandbox
    from retention_pipeline.sandbox.tiktok import TikTokSandbox

    sandboxes = {
        "customerio": CustomerIoSandbox(),
        "meta": MetaSandbox(ad_account_id=META_AD_ACCOUNT),
        "google": GoogleDataManagerSandbox(),
        # The sandboxes refuse a request over the limit (TikTok 40011, Pinterest 400), so a client sending more
        # rows per request than the limit could not pass unnoticed.
        "tiktok": TikTokSandbox(advertiser_id=TIKTOK_ADVERTISER, max_rows=limit("tiktok")),
        "pinterest": PinterestSandbox(ad_account_id=PINTEREST_AD_ACCOUNT, max_records=limit("pinterest")),
    }
    recorders = {name: _Recorder(sandbox) for name, sandbox in sandboxes.items()}
    servers = {name: LoopbackServer(recorder) for name, recorder in recorders.items()}
    routing = {
        "customerio": {s: str(sandboxes["customerio"].create_segment(s)) for s in segment_names},
        "meta": {s: sandboxes["meta"].create_audience(s) for s in segment_names},
        "google": {s: f"list-{s}" for s in segment_names},
        "tiktok": {s: sandboxes["tiktok"].create_audience(f"bench {s}") for s in segment_names},
        "pinterest": {s: _pinterest_list(sandboxes["pinterest"], f"bench {s}") for s in segment_names},
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
    """The Customer.io, Meta, Google, TikTok and Pinterest sandboxes on loopback ports in a child process."""

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
        """The project's adapters and clients, pointed at the loopback sandboxes as the real services would be, each
        with its segment → object ids (as destinations.yaml would give them) and its registry limit."""
        from retention_pipeline.destinations.customerio.adapter import CustomerIoAdapter
        from retention_pipeline.destinations.customerio.client import CustomerIoClient
        from retention_pipeline.destinations.google.adapter import GoogleAdapter
        from retention_pipeline.destinations.google.client import GoogleDataManagerClient
        from retention_pipeline.destinations.meta.adapter import MetaAdapter
        from retention_pipeline.destinations.meta.client import MetaClient
        from retention_pipeline.destinations.pinterest.adapter import PinterestAdapter
        from retention_pipeline.destinations.pinterest.client import PinterestClient
        from retention_pipeline.destinations.tiktok.adapter import TikTokAdapter
        from retention_pipeline.destinations.tiktok.client import TikTokClient

        ids = self.routing_ids
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
        tiktok = TikTokClient(
            api_url=f"{self.urls['tiktok']}/open_api/v1.3",
            access_token=CREDENTIAL,
            advertiser_id=TIKTOK_ADVERTISER,
            http_client=http,
            batch_rows=limit("tiktok"),
        )
        pinterest = PinterestClient(
            url=f"{self.urls['pinterest']}/v5",
            access_token=CREDENTIAL,
            ad_account_id=PINTEREST_AD_ACCOUNT,
            http_client=http,
            batch_records=limit("pinterest"),
        )
        return {
            "customerio": CustomerIoAdapter(cio, None, ids["customerio"]),
            "meta": MetaAdapter(meta, None, ids["meta"]),
            "google": GoogleAdapter(google, {"operating_account": GOOGLE_ACCOUNT}, ids["google"]),
            "tiktok": TikTokAdapter(tiktok, None, ids["tiktok"]),
            "pinterest": PinterestAdapter(pinterest, None, ids["pinterest"]),
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
        """⌈changes / limit⌉ per kind of call, from the registry's limits (not the adapter's own estimate): for
        the ad platforms one call per ≤ limit adds and one per ≤ limit removes (an update is a remove plus an add):
        10,000 rows per Meta/Google call, 1,000 rows per TikTok call, 10,000 records per Pinterest call; for
        Customer.io 1,000 ids per segment call and, for its batch, the 500 KB body limit over the bytes of ops
        actually sent."""
        from retention_pipeline.destinations.customerio.adapter import (
            CUSTOMERIO_BATCH_BYTES,
            CUSTOMERIO_SEGMENT_IDS,
        )

        if self.destination != "customerio":
            rows = limit(self.destination)
            adds, removes = self.adds + self.updates, self.removes + self.updates
            return math.ceil(adds / rows) + math.ceil(removes / rows)
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
        from retention_pipeline.destinations.plugin import ItemResult, RequestResult, SendResult

        request = RequestResult("ack", len(changes), ok=True, http_status=200)
        items = [ItemResult(c.member_key, c.operation, True, None, request.request_id) for c in changes]
        return SendResult(requests=[request], items=items)


def ack_all_adapters() -> dict:
    return {name: AckAll(name) for name in DESTINATIONS}
