"""Webhook forgeries, stale and replayed deliveries, oversized and poisoned bodies, bursts and inbox recreation,
against the real receiver on loopback.

The receiver runs with a clock the scenario can move, so a delivery captured now can be replayed "six minutes
later". What counts is what reached the inbox (and, through the notifications sensor, DuckDB): a forged, stale or
replayed delivery is accepted if it added a row; a valid one is lost if it never reaches DuckDB.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import json
import logging
import shutil
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
        self.on_read: Callable[[], None] | None = None  # called once a request is read, before it is handled
        self.log = io.StringIO()
        self._handler = logging.StreamHandler(self.log)
        logging.getLogger("retention_pipeline.operations.webhooks").addHandler(self._handler)
        logging.getLogger("retention_pipeline.operations.webhooks").setLevel(logging.DEBUG)
        self.server = serve("127.0.0.1", 0, SECRETS["METRONOME_WEBHOOK_SECRET"], self.path,
                            max_body_bytes=MAX_BODY, clock=self._now)  # fmt: skip
        self.http = httpx.Client(timeout=10)
        self.suite = suite

    def _now(self) -> datetime:
        if self.on_read:
            self.on_read()
        return datetime.now(UTC) + self.offset

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        return self.http.post(self.server.url, content=body, headers=headers).status_code

    def deliver(self, *events: dict) -> list[int]:
        return [self.post(body, _signed(body)) for body in (json.dumps(event).encode() for event in events)]

    def stored(self) -> list[str]:
        with sqlite3.connect(self.path) as con:
            return [r[0] for r in con.execute("SELECT id FROM inbox ORDER BY seq")]

    def kept(self) -> list[bytes]:
        """The bodies kept in the inbox's `rejected` table (none when it has no such table)."""
        with sqlite3.connect(self.path) as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'rejected'").fetchone():
                return []
            return [r[0] for r in con.execute("SELECT body FROM rejected ORDER BY first_received_at")]

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


class SensorTicks:
    """The notifications sensor evaluated tick after tick over one DuckDB file, its cursor carried from one tick to
    the next as the daemon carries it."""

    def __init__(self, suite: Suite, name: str) -> None:
        self.db = suite.root / f"{name}.duckdb"
        self.cursor: str | None = None
        self.run_keys: list[str] = []

    def tick(self, inbox: Path) -> None:
        from retention_pipeline.definitions import defs
        from retention_pipeline.operations.notifications import metronome_notifications_sensor
        from retention_pipeline.warehouse import DuckDBWarehouse

        with (
            environ({"RETENTION_WEBHOOK_INBOX": str(inbox), "RETENTION_DUCKDB_PATH": str(self.db)}),
            dg.instance_for_test() as instance,
        ):
            context = dg.build_sensor_context(
                instance=instance,
                cursor=self.cursor,
                resources={"duckdb": DuckDBWarehouse(path=str(self.db))},
                definitions=defs,
            )
            result = metronome_notifications_sensor.evaluate_tick(context)
        self.cursor = result.cursor or self.cursor
        self.run_keys += [run.run_key for run in result.run_requests]

    def stored(self) -> list[str]:
        """Every id in raw.metronome_notifications, sorted, a duplicate as often as it is stored."""
        import duckdb

        with duckdb.connect(str(self.db), read_only=True) as con:
            return [
                r[0] for r in con.execute("SELECT id FROM raw.metronome_notifications ORDER BY id").fetchall()
            ]


def _sensor(suite: Suite, inbox, name: str = "webhooks") -> list[str]:
    """Evaluate the notifications sensor twice over the inbox; the ids in raw.metronome_notifications."""
    ticks = SensorTicks(suite, name)
    ticks.tick(inbox)
    ticks.tick(inbox)
    return ticks.stored()


def _delete(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _copy(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def inbox_recreation(suite: Suite) -> Row:
    """Events delivered after the inbox file is recreated reach DuckDB although the sensor's cursor (from the old
    file) is past their row numbers (F14)."""
    row = Row(GROUP, "inbox recreation (deleted under the running receiver, moved to a new path, restored from an "
                     "older copy), sensor cursor carried over")  # fmt: skip
    moved, fresh = 0, 0
    for case in ("deleted", "moved", "restored"):
        receiver = Receiver(suite, f"recreation-{case}")
        ticks = SensorTicks(suite, f"recreation-{case}")
        backup = suite.root / f"recreation-{case}-backup.sqlite3"
        before = [_event(1000 + n) for n in range(3)]
        after = [_event(2000 + n) for n in range(3)]
        receiver.deliver(before[0])
        _copy(receiver.path, backup)
        receiver.deliver(*before[1:])
        ticks.tick(receiver.path)
        row.injections += 1
        inbox = receiver.path
        if case == "deleted":  # the running receiver recreates the file at its next delivery
            _delete(receiver.path)
        elif case == "moved":  # a new volume: the receiver restarts on another path, the sensor follows it
            receiver.close()
            receiver = Receiver(suite, f"recreation-{case}-new-volume")
            inbox = receiver.path
        else:  # an operator restores yesterday's copy under the running receiver
            _delete(receiver.path)
            shutil.copyfile(backup, receiver.path)
        statuses = receiver.deliver(*after)
        failure = None
        try:
            ticks.tick(inbox)
            ticks.tick(inbox)
        except Exception as error:  # noqa: BLE001 - a sensor failing on the new file is what this case measures
            failure = f"{type(error).__name__}: {error}"
        receiver.close()
        expected = sorted(e["id"] for e in before + after)
        stored = ticks.stored()
        lost = len(set(expected) - set(stored))
        duplicates = len(stored) - len(set(stored))
        fresh_keys = len(set(ticks.run_keys)) == len(ticks.run_keys) == 2
        ok = statuses == [200] * len(after) and lost == 0 and duplicates == 0 and fresh_keys and not failure
        moved += len(set(stored))
        fresh += fresh_keys
        row.case(ok, lost=lost, duplicates=duplicates, finding="F14",
                 message=None if ok else f"{case}: answers {statuses}, DuckDB {stored}, run keys {ticks.run_keys}"
                                         + (f", sensor {failure}" if failure else ""))  # fmt: skip
    row.note(f"3 events before and 3 after each recreation; {moved} ids in DuckDB (expected 18), each once; in "
             f"{fresh}/3 the events after it requested a run under a key not used before")  # fmt: skip
    return row


def burst(suite: Suite, senders: int = 200) -> Row:
    """`senders` signed deliveries on their own connections, released at the same instant (F15)."""
    row = Row(GROUP, f"burst of {senders} concurrent deliveries (one connection each, released together)")
    receiver = Receiver(suite, "burst")
    host, port = receiver.server.url.removeprefix("http://").split(":")
    start = threading.Barrier(senders)
    outcomes: dict[str, object] = {}

    def send(n: int) -> None:
        body = json.dumps(_event(3000 + n)).encode()
        headers = _signed(body)
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        start.wait()
        try:
            connection.request("POST", "/", body, headers)
            outcomes[f"rlb-evt-{3000 + n}"] = connection.getresponse().status
        except OSError as error:
            outcomes[f"rlb-evt-{3000 + n}"] = type(error).__name__
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    ids = receiver.stored()
    for event_id, outcome in sorted(outcomes.items()):
        row.injections += 1
        once = ids.count(event_id) == 1
        row.case(outcome == 200 and once, lost=int(event_id not in ids), finding="F15",
                 message=None if outcome == 200 and once else f"{event_id}: {outcome}")  # fmt: skip
    row.duplicates += len(ids) - len(set(ids))
    moved = _sensor(suite, receiver.path, "burst")
    ok = moved == sorted(outcomes)
    row.case(ok, lost=len(set(ids) - set(moved)), duplicates=len(moved) - len(set(moved)), finding="F15",
             message=None if ok else f"the sensor moved {len(moved)} of {senders}")  # fmt: skip
    receiver.close()
    answered = sum(outcome == 200 for outcome in outcomes.values())
    resets = sum(outcome == "ConnectionResetError" for outcome in outcomes.values())
    row.metrics["resets"] = resets
    row.note(f"{answered}/{senders} answered 200 in {seconds:.1f} s, {resets} reset; inbox {len(set(ids))} ids, "
             f"each once; the sensor moved {len(set(moved))} into DuckDB once")  # fmt: skip
    return row


def poisoned(suite: Suite) -> Row:
    """Correctly signed bodies no event can be made of, and a client that hangs up before its answer (F16)."""
    row = Row(GROUP, "poisoned signed bodies (JSON 2,000 and 33 deep, lone surrogates, not UTF-8) and a client "
                     "hanging up before its answer")  # fmt: skip
    receiver = Receiver(suite, "poisoned")

    def nested(depth: int) -> bytes:
        return b'{"id": "rlb-deep", "type": "x", "n": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

    bodies = {
        "JSON nested 2,000 deep": nested(2000),
        "JSON nested 33 deep": nested(33),
        "lone surrogate in id": b'{"id": "\\ud800", "type": "alerts.x"}',
        "lone surrogate in customer_id": b'{"id": "rlb-s1", "type": "x", "properties": {"customer_id": "\\udc00"}}',
        "lone surrogate in another field": b'{"id": "rlb-s2", "type": "x", "note": "\\ud83d"}',
        "not UTF-8": b'{"id": "rlb-\xff", "type": "x"}',
    }
    refused = 0
    for n, (name, body) in enumerate(bodies.items()):
        row.injections += 1
        try:
            status: object = receiver.post(body, _signed(body))
        except httpx.HTTPError as error:  # the handler died without answering
            status = type(error).__name__
        kept = body in receiver.kept()
        valid = _event(4000 + n)
        after = receiver.deliver(valid)
        stored = receiver.stored()
        ok = status == 400 and kept and valid["id"] in stored and after == [200] and "rlb-deep" not in stored
        refused += ok
        row.case(ok, lost=int(valid["id"] not in stored), finding="F16",
                 message=None if ok else f"{name}: HTTP {status}, kept {kept}, next delivery {after}")  # fmt: skip

    read, hung_up = threading.Event(), threading.Event()

    def hang_up_first() -> None:
        read.set()
        hung_up.wait(10)

    receiver.on_read = hang_up_first
    body = json.dumps(_event(4100)).encode()
    headers = "".join(f"{k}: {v}\r\n" for k, v in _signed(body).items())
    host, port = receiver.server.url.removeprefix("http://").split(":")
    row.injections += 1
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode()
                     + body)  # fmt: skip
        read.wait(10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    hung_up.set()
    deadline = time.monotonic() + 10
    while "disconnected" not in receiver.log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    receiver.on_read = None
    log = receiver.log.getvalue()
    one_line = log.count("disconnected") == 1 and "Traceback" not in log
    stored = receiver.stored().count("rlb-evt-4100")
    row.case(one_line and stored == 1, lost=int(stored == 0), finding="F16",
             message=None if one_line and stored == 1 else f"hang-up: stored {stored}, log {log[-300:]!r}")  # fmt: skip
    receiver.close()
    row.note(f"{refused}/{len(bodies)} answered 400 and kept in the inbox's `rejected` table, each followed by a "
             f"valid delivery stored; the hang-up: event stored {stored}×, "
             + ("one log line, no traceback" if one_line else "no one-line log"))  # fmt: skip
    return row


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    """--quick keeps the forgeries; recreation, the burst and poisoned bodies have their tests in make test
    (retention_pipeline_tests/operations/) and run in the full suite."""
    rows = []
    extra = () if quick else (lambda s: [inbox_recreation(s)], lambda s: [burst(s)], lambda s: [poisoned(s)])
    for make in (forgeries, *extra):
        for row in make(suite):
            suite.progress(row)
            rows.append(row)
    return rows
