"""Receives Metronome webhooks: verify the signature, deduplicate on `id`, append to a durable inbox, answer 200.

Metronome asks for a fast acknowledgement and delivers at least once (reference §4.1), so the handler does no
processing: one HMAC check and one SQLite commit. The `metronome_notifications_sensor` (operations/notifications.py)
moves inbox rows into DuckDB later. The inbox is SQLite in WAL mode rather than DuckDB because DuckDB admits one
writer process at a time and pipeline runs hold its file for minutes; a webhook must never wait for that lock.
Each inbox file carries a random identity, so the sensor's cursor (identity, last row) notices a recreated file.
A correctly signed body that is not a usable event is answered 400 and kept in the inbox's `rejected` table.

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
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

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
# Connections the kernel queues before the accept loop takes them. The default of 5 reset most of a burst of 200
# concurrent deliveries; Linux caps it at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 1024
# Metronome's events nest 3 levels deep; a far deeper body is hostile or broken, and past ~1,000 levels the parser
# raises RecursionError.
MAX_JSON_DEPTH = 32

T = TypeVar("T")


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
    except RecursionError:
        raise Rejected(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise Rejected(400, "body is not UTF-8 JSON") from None
    if not isinstance(event, dict):
        raise Rejected(400, "body is not a JSON object")
    _check_tree(event)
    for key in ("id", "type"):
        if not isinstance(event.get(key), str) or not event[key]:
            raise Rejected(400, f"event has no string `{key}`")
    return event


def _check_tree(event: dict) -> None:
    """Refuse nesting past MAX_JSON_DEPTH and strings that are not Unicode: a lone surrogate escape such as
    "\\ud800" is valid JSON syntax, but SQLite cannot encode it and DuckDB reads the whole body as NULL."""
    pending: list[tuple[object, int]] = [(event, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise Rejected(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            pending += [(key, depth) for key in value]
            pending += [(item, depth + 1) for item in value.values()]
        elif isinstance(value, list):
            pending += [(item, depth + 1) for item in value]
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise Rejected(400, "a string holds a lone surrogate escape (not Unicode)") from None


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
class InboxCursor:
    """Where a reader stopped: the inbox file's identity, the last `seq` it took from that file and that row's event
    id (an older copy of the same file, restored, reuses row numbers for other events)."""

    inbox_id: str
    seq: int
    event_id: str

    def __str__(self) -> str:
        return f"{self.inbox_id}:{self.seq}:{self.event_id}"

    @classmethod
    def parse(cls, text: str | None) -> InboxCursor | None:
        """None for anything else, e.g. the bare row number cursors held before inboxes had an identity."""
        parts = (text or "").split(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])


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

    DDL = (
        """
        CREATE TABLE IF NOT EXISTS inbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused in this file: the cursor
            id TEXT NOT NULL UNIQUE,                -- Metronome's event id; delivery is at-least-once
            type TEXT NOT NULL,
            customer_id TEXT,
            event_timestamp TEXT,                   -- as sent, when the payload has one
            received_at TEXT NOT NULL,              -- receiver's clock, ISO-8601 UTC
            body TEXT NOT NULL                      -- the exact body received
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS inbox_identity (
            one_row INTEGER PRIMARY KEY CHECK (one_row = 1),
            inbox_id TEXT NOT NULL,                 -- random: a recreated file gets a new one, a moved file keeps it
            created_at TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS rejected (      -- signed bodies answered 400, kept for an operator to inspect
            body_sha256 TEXT PRIMARY KEY,           -- Metronome retries a 4xx: each distinct body is kept once
            reason TEXT NOT NULL,
            first_received_at TEXT NOT NULL,
            last_received_at TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            body BLOB NOT NULL                      -- the exact bytes, which need not be UTF-8
        )
        """,
    )

    INSERT = (
        "INSERT INTO inbox (id, type, customer_id, event_timestamp, received_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
    )
    QUARANTINE = (
        "INSERT INTO rejected (body_sha256, reason, first_received_at, last_received_at, attempts, body) "
        "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (body_sha256) DO UPDATE SET "
        "last_received_at = excluded.last_received_at, attempts = attempts + 1"
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        # Handler threads queue here rather than in SQLite's busy handler, whose growing sleeps let a burst of
        # 1,000 concurrent deliveries starve some writers past the busy timeout (answered 503). Held around the
        # transaction only: connections opened and closed outside it overlap, so a close is rarely the last one,
        # which checkpoints the WAL (holding the lock across that halved throughput).
        self._write_lock = threading.Lock()

    def create(self) -> None:
        """Create the file in WAL mode (readers never block the writer) with its tables and identity; idempotent."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                self._create_schema(con)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"RETENTION_WEBHOOK_INBOX={str(self.path)!r} cannot be used: {exc}") from None

    @staticmethod
    def _create_schema(con: sqlite3.Connection) -> None:
        con.execute("PRAGMA journal_mode = WAL")
        for ddl in Inbox.DDL:
            con.execute(ddl)
        # Read first, so an inbox that has its identity takes no write lock here.
        if con.execute("SELECT 1 FROM inbox_identity").fetchone() is None:
            with con:
                con.execute(
                    "INSERT OR IGNORE INTO inbox_identity VALUES (1, ?, ?)",
                    (uuid.uuid4().hex, datetime.now(UTC).isoformat()),
                )

    def append(self, event: dict, body: str, received_at: datetime) -> bool:
        """Commit the event unless its id is already stored; True when it is new. Durable once this returns."""
        row = (
            event["id"],
            event["type"],
            event_field(event, "customer_id"),
            event_field(event, "timestamp"),
            received_at.astimezone(UTC).isoformat(),
            body,
        )
        return self._write(lambda con: con.execute(self.INSERT, row).rowcount) == 1

    def quarantine(self, body: bytes, reason: str, received_at: datetime) -> None:
        """Keep a signed body the receiver refused, counting repeated deliveries of the same bytes."""
        at = received_at.astimezone(UTC).isoformat()
        row = (hashlib.sha256(body).hexdigest(), reason, at, at, body)
        self._write(lambda con: con.execute(self.QUARANTINE, row))

    def read_after(self, cursor: InboxCursor | None, limit: int) -> tuple[InboxCursor, list[InboxRow]]:
        """Where reading starts and up to `limit` rows after it, oldest first.

        Reading goes on after the cursor only if it points at a row of this file that still holds its event;
        otherwise (no cursor, another file, an older copy of this one restored) it starts at row 0, because row
        numbers restart with the file.
        """
        with self._connect() as con:
            (inbox_id,) = con.execute("SELECT inbox_id FROM inbox_identity").fetchone()
            valid = (
                cursor is not None
                and cursor.inbox_id == inbox_id
                and con.execute(
                    "SELECT 1 FROM inbox WHERE seq = ? AND id = ?", (cursor.seq, cursor.event_id)
                ).fetchone()
                is not None
            )
            start = cursor if valid else InboxCursor(inbox_id, 0, "")
            rows = con.execute(
                "SELECT seq, id, type, customer_id, event_timestamp, received_at, body FROM inbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (start.seq, limit),
            ).fetchall()
        return start, [InboxRow(*row) for row in rows]

    def _write(self, statement: Callable[[sqlite3.Connection], T]) -> T:
        """Run `statement` in one transaction. A file deleted or replaced under the running receiver has no tables:
        recreate them (with a new identity, which restarts the sensor at row 0) instead of failing every delivery."""
        with self._connect() as con, self._write_lock:
            try:
                with con:  # the transaction: commit on exit
                    return statement(con)
            except sqlite3.OperationalError as exc:
                if not str(exc).startswith("no such table"):
                    raise
            log.warning("inbox %s has no tables (file deleted or replaced); recreating them", self.path)
            self._create_schema(con)
            with con:
                return statement(con)

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
    request_queue_size = LISTEN_BACKLOG
    secret: str
    inbox: Inbox
    max_body_bytes: int
    clock: Callable[[], datetime]

    def handle_error(self, request: object, client_address: tuple) -> None:
        """A client that hangs up is routine (the sender retries); anything else is logged with its traceback
        instead of socketserver's print to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.info("client %s disconnected: %s", client_address[0], type(error).__name__)
        else:
            log.error("error serving %s", client_address[0], exc_info=True)


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
            status, answer = 200, {"status": self._receive()}
        except Rejected as rejected:
            log.warning("rejected %s from %s: %s", rejected.status, self.client_address[0], rejected.reason)
            status, answer = rejected.status, {"error": rejected.reason}
        except ConnectionError:
            raise  # the client is gone: nothing to answer (see _Server.handle_error)
        except Exception:  # noqa: BLE001 - an unforeseen bug still gets an answer Metronome retries, not a dead socket
            log.exception("unexpected error receiving from %s", self.client_address[0])
            status, answer = 500, {"error": "internal error; retry later"}
        self._answer(status, answer)

    def _receive(self) -> str:
        body = self._read_body()
        received_at = self.server.clock()
        date = next((self.headers[name] for name in DATE_HEADERS if self.headers.get(name)), None)
        verify(self.server.secret, date, body, self.headers.get(SIGNATURE_HEADER), received_at)
        try:
            event = parse_event(body)
        except Rejected as rejected:
            self._quarantine(body, rejected.reason, received_at)
            raise
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

    def _quarantine(self, body: bytes, reason: str, received_at: datetime) -> None:
        """Signed, so Metronome sent it: keep the bytes. When they cannot be kept, 503 asks for them again."""
        try:
            self.server.inbox.quarantine(body, reason, received_at)
        except sqlite3.Error as exc:
            log.error("could not keep a rejected body (%s): %s", reason, exc)
            raise Rejected(503, "inbox unavailable; retry later") from None

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
