"""Webhook forgeries, stale and replayed deliveries, oversized bodies, against the real receiver on loopback.

The receiver runs with a clock the scenario can move, so a delivery captured now can be replayed "six minutes
later". What counts is what reached the inbox (and, through the notifications sensor, DuckDB): a forged, stale or
replayed delivery is accepted if it added a row.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import socket
import sqlite3
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx

from reliability.report import Row
from reliability.workspace import SECRETS, Suite, environ
from retention_pipeline.operations.webhooks import serve, sign, signed_headers

GROUP = "Webhooks"
MAX_BODY = 64 * 1024


def _event(n: int) -> dict:
    return {
        "id": f"rlb-evt-{n}",
        "type": "alerts.low_remaining_commit_balance_reached",
        "properties": {"customer_id": f"cus-{n}", "alert_id": "al-1", "timestamp": "2026-11-20T10:05:00Z",
                       "threshold": 1000, "remaining_balance": 900},
    }  # fmt: skip


class Receiver:
    def __init__(self, suite: Suite, name: str) -> None:
        self.path = suite.root / f"{name}-inbox.sqlite3"
        self.offset = timedelta(0)
        self.log = io.StringIO()
        self._handler = logging.StreamHandler(self.log)
        logging.getLogger("retention_pipeline.operations.webhooks").addHandler(self._handler)
        logging.getLogger("retention_pipeline.operations.webhooks").setLevel(logging.DEBUG)
        self.server = serve("127.0.0.1", 0, SECRETS["METRONOME_WEBHOOK_SECRET"], self.path,
                            max_body_bytes=MAX_BODY, clock=lambda: datetime.now(UTC) + self.offset)  # fmt: skip
        self.http = httpx.Client(timeout=10)
        self.suite = suite

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        return self.http.post(self.server.url, content=body, headers=headers).status_code

    def stored(self) -> list[str]:
        with sqlite3.connect(self.path) as con:
            return [r[0] for r in con.execute("SELECT id FROM inbox ORDER BY seq")]

    def close(self) -> None:
        self.http.close()
        self.server.close()
        logging.getLogger("retention_pipeline.operations.webhooks").removeHandler(self._handler)
        self.suite.transcript.add("webhook receiver log", self.log.getvalue())


def _signed(body: bytes, *, secret: str = SECRETS["METRONOME_WEBHOOK_SECRET"], skew=timedelta(0)) -> dict:
    return signed_headers(secret, body, datetime.now(UTC) + skew)


def forgeries(suite: Suite) -> list[Row]:
    receiver = Receiver(suite, "webhooks")
    valid = [json.dumps(_event(n)).encode() for n in range(5)]
    forged_row = Row(GROUP, "forged deliveries (wrong secret, tampered body/signature/date, missing headers)")
    stale_row = Row(GROUP, "stale, future and late-replayed deliveries (|skew| > 5 min)")
    replay_row = Row(GROUP, "replays of valid deliveries within the window (×10 each)")
    size_row = Row(GROUP, "oversized, chunked, short and malformed bodies")

    base = json.dumps(_event(100)).encode()
    good = _signed(base)
    other = _signed(json.dumps(_event(101)).encode())
    flipped = good["Metronome-Webhook-Signature"]
    flipped = flipped[:-1] + ("0" if flipped[-1] != "0" else "1")
    later = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    forged = {
        "wrong secret": (base, _signed(base, secret="not-the-secret")),
        "body tampered after signing": (base.replace(b"900", b"1"), good),
        "signature tampered": (base, {**good, "Metronome-Webhook-Signature": flipped}),
        "signature missing": (base, {k: v for k, v in good.items() if k != "Metronome-Webhook-Signature"}),
        "date headers missing": (base, {k: v for k, v in good.items() if k not in ("X-Metronome-Date", "Date")}),
        "date changed after signing": (base, {**good, "X-Metronome-Date": later, "Date": later}),
        "empty signature": (base, {**good, "Metronome-Webhook-Signature": ""}),
        "signature without the newline": (base, {**good, "Metronome-Webhook-Signature": hmac.new(
            SECRETS["METRONOME_WEBHOOK_SECRET"].encode(), good["X-Metronome-Date"].encode() + base,
            hashlib.sha256).hexdigest()}),
        "another event's signature": (base, other),
        "signed with an empty secret": (base, {**good, "Metronome-Webhook-Signature": sign("", good["Date"], base)}),
    }  # fmt: skip
    for name, (body, headers) in forged.items():
        status = receiver.post(body, headers)
        accepted = "rlb-evt-100" in receiver.stored()
        forged_row.injections += 1
        forged_row.case(status == 401 and not accepted, duplicates=int(accepted),
                        message=None if status == 401 and not accepted else f"{name}: HTTP {status}")  # fmt: skip

    stale = {
        "dated 6 minutes ago": (base, _signed(base, skew=-timedelta(minutes=6))),
        "dated 6 minutes ahead": (base, _signed(base, skew=timedelta(minutes=6))),
        "dated a day ago": (base, _signed(base, skew=-timedelta(days=1))),
    }
    for name, (body, headers) in stale.items():
        status = receiver.post(body, headers)
        accepted = "rlb-evt-100" in receiver.stored()
        stale_row.injections += 1
        stale_row.case(status == 401 and not accepted, duplicates=int(accepted),
                       message=None if status == 401 and not accepted else f"{name}: HTTP {status}")  # fmt: skip

    captured = [(body, _signed(body)) for body in valid]
    statuses = [receiver.post(body, headers) for body, headers in captured]
    for _ in range(9):
        for body, headers in captured:
            replay_row.injections += 1
            statuses.append(receiver.post(body, headers))
    ids = receiver.stored()
    extra = len(ids) - len(set(ids))
    replay_row.case(sorted(set(ids)) == [f"rlb-evt-{n}" for n in range(5)] and extra == 0, duplicates=extra)
    replay_row.note(f"{statuses.count(200)} answered 200 ({len(captured)} stored, the rest 'duplicate'); inbox keeps "
                    "each id once")  # fmt: skip

    receiver.offset = timedelta(minutes=6)  # the same captured deliveries, six minutes later
    for name, (body, headers) in [(f"captured {i} replayed 6 min later", c) for i, c in enumerate(captured)]:
        status = receiver.post(body, headers)
        stale_row.injections += 1
        stale_row.case(status == 401, message=None if status == 401 else f"{name}: HTTP {status}")
    receiver.offset = timedelta(0)

    big = json.dumps({**_event(200), "padding": "x" * (MAX_BODY + 1)}).encode()
    cases = {
        "body over RETENTION_WEBHOOK_MAX_BODY_BYTES": (lambda: receiver.post(big, _signed(big)), 413),
        "chunked body (no Content-Length)": (
            lambda: receiver.http.post(receiver.server.url, content=iter([base]), headers=good).status_code, 411),
        "50 MB declared, headers only": (lambda: _declared_only(receiver.server.url, 50 << 20), 413),
        "signed truncated JSON": (lambda: receiver.post(b'{"id": "rlb-evt-300", ', _signed(b'{"id": "rlb-evt-300", ')), 400),
        "signed JSON array": (lambda: receiver.post(b"[1, 2]", _signed(b"[1, 2]")), 400),
        "signed event without id": (lambda: receiver.post(b'{"type": "x"}', _signed(b'{"type": "x"}')), 400),
    }  # fmt: skip
    for name, (send, expected) in cases.items():
        before = len(receiver.stored())
        status = send()
        size_row.injections += 1
        added = len(receiver.stored()) - before
        size_row.case(status == expected and added == 0, duplicates=added,
                      message=None if status == expected and added == 0 else f"{name}: HTTP {status}")  # fmt: skip
    size_row.note(
        "413 from Content-Length alone (body never read), 411 without a length, 400 for malformed events"
    )

    moved = _sensor(suite, receiver.path)
    replay_row.case(moved == [f"rlb-evt-{n}" for n in range(5)],
                    message=None if moved == [f"rlb-evt-{n}" for n in range(5)] else f"sensor moved {moved}")  # fmt: skip
    replay_row.note("the notifications sensor, evaluated twice, moved each id into DuckDB once")
    receiver.close()
    forged_row.note("all 401, nothing stored")
    stale_row.note("all 401, nothing stored (5-minute window both ways)")
    forged_row.metrics["accepted"] = forged_row.duplicates
    stale_row.metrics["accepted"] = stale_row.duplicates
    replay_row.metrics["accepted_twice"] = replay_row.duplicates
    return [forged_row, stale_row, replay_row, size_row]


def _declared_only(url: str, length: int) -> int:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n".encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def _sensor(suite: Suite, inbox) -> list[str]:
    """Evaluate the notifications sensor twice over the inbox; the ids in raw.metronome_notifications."""
    import duckdb

    from retention_pipeline.definitions import defs
    from retention_pipeline.operations.notifications import metronome_notifications_sensor
    from retention_pipeline.warehouse import DuckDBWarehouse

    db = suite.root / "webhooks.duckdb"
    cursor = None
    with (
        environ({"RETENTION_WEBHOOK_INBOX": str(inbox), "RETENTION_DUCKDB_PATH": str(db)}),
        dg.instance_for_test() as instance,
    ):
        for _ in range(2):
            context = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                resources={"duckdb": DuckDBWarehouse(path=str(db))},
                definitions=defs,
            )
            result = metronome_notifications_sensor.evaluate_tick(context)
            cursor = result.cursor or cursor
    with duckdb.connect(str(db), read_only=True) as con:
        return [
            r[0] for r in con.execute("SELECT id FROM raw.metronome_notifications ORDER BY id").fetchall()
        ]


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    rows = forgeries(suite)
    for row in rows:
        suite.progress(row)
    return rows
