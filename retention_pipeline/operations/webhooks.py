"""Receives Metronome webhooks: verify the signature, deduplicate on `id`, append to a durable inbox, answer 200.

Metronome asks for a fast acknowledgement and delivers at least once (reference §4.1), so the handler does no
processing: one HMAC check and one SQLite commit. The `metronome_notifications_sensor` (operations/notifications.py)
moves inbox rows into DuckDB later. The inbox is SQLite in WAL mode rather than DuckDB because DuckDB admits one
writer process at a time and pipeline runs hold its file for minutes; a webhook must never wait for that lock.

Server: the standard library's `ThreadingHTTPServer`, as the Metronome sandbox uses. The work per request is
synchronous and must refuse an oversized body from its Content-Length before reading it, both plain with
`BaseHTTPRequestHandler`; starlette/uvicorn would only wrap blocking calls in an event loop and pull in a
dependency the project does not declare. It speaks plain HTTP (loopback by default): Metronome delivers over HTTPS,
so production puts a TLS-terminating proxy in front.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from retention_pipeline.config import ConfigError, env, env_parsed, positive_int

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Metronome-Webhook-Signature"
# Proxies may rewrite `Date`; Metronome sends the signed value in both (reference §4.3).
DATE_HEADERS = ("X-Metronome-Date", "Date")
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_BODY_BYTES_LIMIT = 64 << 20
SQLITE_BUSY_TIMEOUT_S = 5.0
# A client that stalls mid-request gives its thread back after this long.
SOCKET_TIMEOUT_S = 30


class Rejected(Exception):
    """A delivery the receiver refuses, with the HTTP status to answer (Metronome retries anything above 299)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, date: str, body: bytes) -> str:
    """Metronome's signature: hex HMAC-SHA256 keyed by the secret's UTF-8, over the date, a newline, the raw body."""
    return hmac.new(secret.encode(), date.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers Metronome would send with `body` at `now`, for sandboxes and tests that play the sender."""
    date = format_datetime(now.astimezone(UTC), usegmt=True)
    return {
        "Content-Type": "application/json",
        "X-Metronome-Date": date,
        "Date": date,
        SIGNATURE_HEADER: sign(secret, date, body),
    }


def verify(secret: str, date: str | None, body: bytes, signature: str | None, now: datetime) -> None:
    """Raise `Rejected(401)` unless `date` is within 5 minutes of `now` (either way) and `signature` matches."""
    if not date:
        raise Rejected(401, "missing X-Metronome-Date (or Date) header")
    if not signature:
        raise Rejected(401, f"missing {SIGNATURE_HEADER} header")
    try:
        sent = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise Rejected(401, "date header is not an HTTP-date") from None
    if sent.tzinfo is None:  # "-0000" means UTC with no zone information
        sent = sent.replace(tzinfo=UTC)
    if abs(now - sent) > MAX_CLOCK_SKEW:
        raise Rejected(401, "date header is more than 5 minutes from the receiver's clock")
    expected = sign(secret, date, body).encode()
    if not hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace")):
        raise Rejected(401, "signature does not match")


def parse_event(body: bytes) -> dict:
    """The event as a JSON object with string `id` and `type`; anything else is a 400 (a retry cannot fix it)."""
    try:
        event = json.loads(body.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise Rejected(400, "body is not UTF-8 JSON") from None
    if not isinstance(event, dict):
        raise Rejected(400, "body is not a JSON object")
    for key in ("id", "type"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise Rejected(400, f"event has no string `{key}`")
    return event


def event_field(event: dict, name: str) -> str | None:
    """A field wherever the shape keeps it: threshold and invoice notifications nest data in `properties`,
    lifecycle notifications are flat (reference §4.2)."""
    properties = event.get("properties")
    value = properties.get(name) if isinstance(properties, dict) else None
    if value is None:
        value = event.get(name)
    return value if isinstance(value, str) else None


def resolve_inbox_path(override: str | None = None) -> Path:
    """The inbox file from RETENTION_WEBHOOK_INBOX (or the override); fails naming the var."""
    raw = env("RETENTION_WEBHOOK_INBOX", override)
    path = Path(raw).expanduser()
    if path.is_dir():
        raise ConfigError(f"RETENTION_WEBHOOK_INBOX={raw!r} is a directory; it must name a SQLite file.")
    return path


@dataclass(frozen=True)
class InboxRow:
    seq: int
    id: str
    type: str
    customer_id: str | None
    event_timestamp: str | None
    received_at: str
    body: str


class Inbox:
    """The SQLite inbox. One connection per call, so handler threads and the sensor's process never share one."""

    DDL = """
    CREATE TABLE IF NOT EXISTS inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused even after pruning: the sensor's cursor
        id TEXT NOT NULL UNIQUE,                -- Metronome's event id; delivery is at-least-once
        type TEXT NOT NULL,
        customer_id TEXT,
        event_timestamp TEXT,                   -- as sent, when the payload has one
        received_at TEXT NOT NULL,              -- receiver's clock, ISO-8601 UTC
        body TEXT NOT NULL                      -- the exact body received
    )
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        """Create the file, switch it to WAL (readers never block the writer) and add the table; idempotent."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("PRAGMA journal_mode = WAL")
                con.execute(self.DDL)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"RETENTION_WEBHOOK_INBOX={str(self.path)!r} cannot be used: {exc}") from None

    def append(self, event: dict, body: str, received_at: datetime) -> bool:
        """Commit the event unless its id is already stored; True when it is new. Durable once this returns."""
        with self._connect() as con, con:  # the inner `con` is the transaction: commit on exit
            cursor = con.execute(
                "INSERT INTO inbox (id, type, customer_id, event_timestamp, received_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    event["id"],
                    event["type"],
                    event_field(event, "customer_id"),
                    event_field(event, "timestamp"),
                    received_at.astimezone(UTC).isoformat(),
                    body,
                ),
            )
            return cursor.rowcount == 1

    def read_after(self, seq: int, limit: int) -> list[InboxRow]:
        """Up to `limit` rows with seq above `seq`, oldest first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT seq, id, type, customer_id, event_timestamp, received_at, body FROM inbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [InboxRow(*row) for row in rows]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            # FULL syncs every commit; under WAL, NORMAL may lose the last commits on power loss.
            con.execute("PRAGMA synchronous = FULL")
            yield con
        finally:
            con.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    secret: str
    inbox: Inbox
    max_body_bytes: int
    clock: Callable[[], datetime]


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes; without this, Nagle plus delayed ACK adds ~40 ms per response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        try:
            outcome = self._receive()
        except Rejected as rejected:
            log.warning("rejected %s from %s: %s", rejected.status, self.client_address[0], rejected.reason)
            self._answer(rejected.status, {"error": rejected.reason})
        else:
            self._answer(200, {"status": outcome})

    def _receive(self) -> str:
        body = self._read_body()
        received_at = self.server.clock()
        date = next((self.headers[name] for name in DATE_HEADERS if self.headers.get(name)), None)
        verify(self.server.secret, date, body, self.headers.get(SIGNATURE_HEADER), received_at)
        event = parse_event(body)
        try:
            stored = self.server.inbox.append(event, body.decode("utf-8"), received_at)
        except sqlite3.Error as exc:
            log.error("inbox write failed for id=%r: %s", event["id"], exc)
            raise Rejected(503, "inbox unavailable; retry later") from None
        outcome = "stored" if stored else "duplicate"
        log.info(
            "%s id=%r type=%r customer_id=%r",
            outcome,
            event["id"],
            event["type"],
            event_field(event, "customer_id"),
        )
        return outcome

    def _read_body(self) -> bytes:
        """The body, refused from its declared length alone when too large (the rest is never read)."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if length < 0 or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # an unread or chunked body would be parsed as the next request
            raise Rejected(411, "a Content-Length header (and no Transfer-Encoding) is required")
        if length > self.server.max_body_bytes:
            self.close_connection = True
            raise Rejected(413, f"body over {self.server.max_body_bytes} bytes")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise Rejected(408, "timed out reading the body") from None
        if len(body) < length:
            self.close_connection = True
            raise Rejected(400, "body shorter than its Content-Length")
        return body

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # The access line holds no payload, but the accepted/rejected lines already say what matters.
        log.debug(format, *args)


class WebhookServer:
    """The receiver on a socket, served from a daemon thread; POST events to `url`, `close()` frees the port."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: str,
        inbox: Inbox,
        max_body_bytes: int,
        clock: Callable[[], datetime],
    ) -> None:
        server_class = _IPv6Server if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.secret = secret
        self._server.inbox = inbox
        self._server.max_body_bytes = max_body_bytes
        self._server.clock = clock
        bound_port = self._server.server_address[1]
        self.url = f"http://[{host}]:{bound_port}" if ":" in host else f"http://{host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long close() waits for the accept loop to notice
            name="metronome-webhooks",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> WebhookServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve(
    host: str,
    port: int,
    secret: str,
    inbox_path: Path | str,
    *,
    max_body_bytes: int = 1 << 20,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> WebhookServer:
    """Create the inbox if needed and start receiving; port 0 picks a free one (see `.url`)."""
    if not secret:
        raise ConfigError("METRONOME_WEBHOOK_SECRET is required but not set.")
    inbox = Inbox(Path(inbox_path))
    inbox.create()
    return WebhookServer(host, port, secret, inbox, max_body_bytes, clock)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m retention_pipeline.webhooks`: print the URL as the first stdout line, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m retention_pipeline.webhooks",
        description="Receive Metronome webhooks into the inbox the notifications sensor reads.",
    )
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (printed on start)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        inbox_path = resolve_inbox_path()
        server = serve(
            args.host,
            args.port,
            env_parsed("METRONOME_WEBHOOK_SECRET", str),
            inbox_path,
            max_body_bytes=positive_int(
                "RETENTION_WEBHOOK_MAX_BODY_BYTES", minimum=1024, maximum=MAX_BODY_BYTES_LIMIT
            ),
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(server.url, flush=True)
        log.info("receiving Metronome webhooks at %s into %s", server.url, inbox_path)
        stop.wait()
    return 0
