"""The webhook receiver: the published signature vector, then every rejection over a real loopback server."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from retention_pipeline.operations.webhooks import Inbox, Rejected, serve, sign, signed_headers, verify

SECRET = "test-webhook-secret"
MAX_BODY = 4096

# Reference §4.3, byte for byte: 2-space indentation, no trailing newline.
VECTOR_SECRET = "correct-horse-battery-staple"
VECTOR_DATE = "Mon, 02 Jan 2006 22:04:05 GMT"
VECTOR_BODY = b"""{
  "id": "b2c9e307-624e-4e7d-a5a4-1b74107d78c4",
  "type": "widget_created",
  "properties": {
    "customer_id": "5f794d50-085a-4db6-8d15-286e518b7225",
    "widget_id": "0891458d-b6f0-4fdd-a41e-380aae1a1e38"
  }
}"""
VECTOR_SIGNATURE = "b82652fa2246cf1d8a27e591f155c865f68b46c19b9213fd9c052f2419b4742b"
VECTOR_NOW = datetime(2006, 1, 2, 22, 4, 5, tzinfo=UTC)

LOW_BALANCE = {
    "id": "evt-low-1",
    "type": "alerts.low_remaining_commit_balance_reached",
    "properties": {
        "customer_id": "cus-1",
        "alert_id": "al-1",
        "alert_name": "Commit below $10",
        "timestamp": "2026-11-20T10:05:00Z",
        "threshold": 1000,
        "triggered_by": "usage",
        "commit_id": "cm-1",
        "remaining_balance": 900,
    },
}


def test_published_test_vector():
    assert sign(VECTOR_SECRET, VECTOR_DATE, VECTOR_BODY) == VECTOR_SIGNATURE
    verify(VECTOR_SECRET, VECTOR_DATE, VECTOR_BODY, VECTOR_SIGNATURE, now=VECTOR_NOW + timedelta(seconds=30))


@pytest.mark.parametrize(
    ("now", "signature", "reason"),
    [
        (VECTOR_NOW + timedelta(minutes=5, seconds=1), VECTOR_SIGNATURE, "5 minutes"),
        (VECTOR_NOW - timedelta(minutes=5, seconds=1), VECTOR_SIGNATURE, "5 minutes"),
        (VECTOR_NOW, VECTOR_SIGNATURE[:-1] + "0", "does not match"),
        (VECTOR_NOW, "", "missing Metronome-Webhook-Signature"),
    ],
    ids=["stale", "future", "tampered", "missing"],
)
def test_verify_rejects(now, signature, reason):
    with pytest.raises(Rejected, match=reason) as rejected:
        verify(VECTOR_SECRET, VECTOR_DATE, VECTOR_BODY, signature, now=now)
    assert rejected.value.status == 401


def test_verify_accepts_exactly_five_minutes_of_skew():
    for skew in (timedelta(minutes=5), -timedelta(minutes=5)):
        verify(VECTOR_SECRET, VECTOR_DATE, VECTOR_BODY, VECTOR_SIGNATURE, now=VECTOR_NOW + skew)


@pytest.fixture
def receiver(inbox_path):
    server = serve("127.0.0.1", 0, SECRET, inbox_path, max_body_bytes=MAX_BODY)
    yield server
    server.close()


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as http:
        yield http


def stored(inbox_path) -> list[tuple]:
    with sqlite3.connect(inbox_path) as con:
        return con.execute(
            "SELECT id, type, customer_id, event_timestamp, body FROM inbox ORDER BY seq"
        ).fetchall()


def deliver(client, url, body: bytes, *, secret=SECRET, skew=timedelta(0), drop=()):
    headers = signed_headers(secret, body, datetime.now(UTC) + skew)
    return client.post(url, content=body, headers={k: v for k, v in headers.items() if k not in drop})


def test_valid_event_is_committed_before_the_answer(receiver, client, inbox_path):
    body = json.dumps(LOW_BALANCE, indent=2).encode()
    response = deliver(client, receiver.url, body)
    assert (response.status_code, response.json()) == (200, {"status": "stored"})
    assert stored(inbox_path) == [
        ("evt-low-1", LOW_BALANCE["type"], "cus-1", "2026-11-20T10:05:00Z", body.decode()),
    ]
    with sqlite3.connect(inbox_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_replayed_id_is_acknowledged_but_stored_once(receiver, client, inbox_path):
    body = json.dumps(LOW_BALANCE).encode()
    first, replay = deliver(client, receiver.url, body), deliver(client, receiver.url, body)
    assert (first.status_code, first.json()["status"]) == (200, "stored")
    assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert len(stored(inbox_path)) == 1


def test_date_header_is_the_fallback(receiver, client, inbox_path):
    response = deliver(client, receiver.url, json.dumps(LOW_BALANCE).encode(), drop=("X-Metronome-Date",))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"skew": -timedelta(minutes=6)}, 401),
        ({"skew": timedelta(minutes=6)}, 401),
        ({"secret": "not-the-secret"}, 401),
        ({"drop": ("Metronome-Webhook-Signature",)}, 401),
        ({"drop": ("X-Metronome-Date", "Date")}, 401),
    ],
    ids=["stale-date", "future-date", "wrong-secret", "no-signature", "no-date"],
)
def test_unauthenticated_deliveries_are_rejected(receiver, client, inbox_path, kwargs, status):
    response = deliver(client, receiver.url, json.dumps(LOW_BALANCE).encode(), **kwargs)
    assert response.status_code == status
    assert stored(inbox_path) == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt-1", "type": ',
        b'["not", "an", "object"]',
        b'{"type": "alerts.x"}',
        b'{"id": 7, "type": "x"}',
    ],
    ids=["truncated", "array", "no-id", "numeric-id"],
)
def test_signed_but_malformed_bodies_are_400(receiver, client, inbox_path, body):
    assert deliver(client, receiver.url, body).status_code == 400
    assert stored(inbox_path) == []


def test_oversized_body_is_413(receiver, client, inbox_path):
    event = {**LOW_BALANCE, "padding": "x" * MAX_BODY}
    assert deliver(client, receiver.url, json.dumps(event).encode()).status_code == 413
    assert stored(inbox_path) == []


def test_oversized_body_is_refused_before_it_is_sent(receiver):
    """The answer comes from Content-Length alone: the client sends headers only and still gets its 413."""
    host, port = receiver.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {50 << 20}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_chunked_body_needs_a_length(receiver, client):
    response = client.post(receiver.url, content=iter([json.dumps(LOW_BALANCE).encode()]))
    assert response.status_code == 411


def cli(env: dict, tmp_path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "retention_pipeline.webhooks", "--port", "0"],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def inbox_ids(inbox_path) -> list[str]:
    with sqlite3.connect(inbox_path) as con:
        return [row[0] for row in con.execute("SELECT id FROM inbox ORDER BY seq")]


def quarantined(inbox_path) -> list[tuple]:
    with sqlite3.connect(inbox_path) as con:
        return con.execute(
            "SELECT body, reason, attempts FROM rejected ORDER BY first_received_at"
        ).fetchall()


def wait_until(condition, what: str) -> None:
    """Poll for something another thread does; the deadline only stops a broken test from hanging."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_burst_of_200_concurrent_deliveries_is_accepted_and_stored_once(receiver, inbox_path):
    """200 senders connect at the same instant; every one gets its 200 (none reset) and each id is stored once."""
    senders = 200
    host, port = receiver.url.removeprefix("http://").split(":")
    start = threading.Barrier(senders)
    outcomes: dict[str, object] = {}

    def send(n: int) -> None:
        body = json.dumps({**LOW_BALANCE, "id": f"evt-burst-{n}"}).encode()
        headers = signed_headers(SECRET, body, datetime.now(UTC))
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        start.wait()
        try:
            connection.request("POST", "/", body, headers)
            outcomes[f"evt-burst-{n}"] = connection.getresponse().status
        except OSError as error:
            outcomes[f"evt-burst-{n}"] = repr(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = {event_id: outcome for event_id, outcome in outcomes.items() if outcome != 200}
    assert len(outcomes) == senders and failed == {}
    ids = inbox_ids(inbox_path)
    assert len(ids) == senders and set(ids) == set(outcomes)


def nested(event_id: str, depth: int) -> bytes:
    """An event whose `n` holds `depth - 1` nested arrays, so the whole body nests `depth` levels."""
    return (
        f'{{"id": "{event_id}", "type": "x", "n": '.encode() + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    )


DEEP = nested("evt-deep", 2000)  # past the parser's recursion limit
TOO_DEEP = "JSON nested deeper than 32 levels"
SURROGATE = "a string holds a lone surrogate escape (not Unicode)"
NOT_JSON = "body is not UTF-8 JSON"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (DEEP, TOO_DEEP),
        (nested("evt-33", 33), TOO_DEEP),
        (b'{"id": "\\ud800", "type": "x"}', SURROGATE),
        (b'{"id": "evt-s", "type": "x", "properties": {"customer_id": "\\udc00"}}', SURROGATE),
        (b'{"id": "evt-s", "type": "x", "note": "ok \\ud83d then"}', SURROGATE),
        (b'{"id": "evt-\xff", "type": "x"}', NOT_JSON),
        (b'{"id": "evt-1", "type": ', NOT_JSON),
    ],
    ids=[
        "nested-2000",
        "nested-33",
        "surrogate-id",
        "surrogate-customer",
        "surrogate-elsewhere",
        "not-utf8",
        "truncated",
    ],
)
def test_poisoned_bodies_are_400_kept_and_the_receiver_goes_on(receiver, client, inbox_path, body, reason):
    response = deliver(client, receiver.url, body)
    assert (response.status_code, response.json()) == (400, {"error": reason})
    assert quarantined(inbox_path) == [(body, reason, 1)]
    assert inbox_ids(inbox_path) == []
    assert deliver(client, receiver.url, json.dumps(LOW_BALANCE).encode()).json() == {"status": "stored"}
    assert inbox_ids(inbox_path) == ["evt-low-1"]


def test_json_nested_32_levels_is_accepted(receiver, client, inbox_path):
    assert deliver(client, receiver.url, nested("evt-32", 32)).status_code == 200
    assert inbox_ids(inbox_path) == ["evt-32"]


def test_a_poisoned_body_retried_is_kept_once_with_its_attempts(receiver, client, inbox_path):
    for _ in range(3):
        assert deliver(client, receiver.url, DEEP).status_code == 400
    with sqlite3.connect(inbox_path) as con:
        assert con.execute("SELECT body_sha256, attempts FROM rejected").fetchall() == [
            (hashlib.sha256(DEEP).hexdigest(), 3)
        ]


def test_unsigned_bodies_are_not_kept(receiver, client, inbox_path):
    """Only what Metronome signed is worth an operator's look; anyone else could fill the disk."""
    assert deliver(client, receiver.url, DEEP, secret="not-the-secret").status_code == 401
    assert quarantined(inbox_path) == []


def test_an_unforeseen_error_is_answered_500_and_the_receiver_goes_on(
    receiver, client, inbox_path, monkeypatch
):
    original = Inbox.append
    monkeypatch.setattr(Inbox, "append", lambda *args: 1 / 0)
    response = deliver(client, receiver.url, json.dumps(LOW_BALANCE).encode())
    assert (response.status_code, response.json()) == (500, {"error": "internal error; retry later"})
    monkeypatch.setattr(Inbox, "append", original)
    assert deliver(client, receiver.url, json.dumps(LOW_BALANCE).encode()).json() == {"status": "stored"}


def test_inbox_deleted_under_the_running_receiver_is_recreated(receiver, client, inbox_path):
    """Not 503 until someone restarts the receiver: the next delivery recreates the file, with its own identity
    (a fresh random one), so the sensor reads it from its first row."""
    assert deliver(client, receiver.url, json.dumps(LOW_BALANCE).encode()).status_code == 200
    inbox_path.unlink()
    response = deliver(client, receiver.url, json.dumps({**LOW_BALANCE, "id": "evt-low-2"}).encode())
    assert (response.status_code, response.json()) == (200, {"status": "stored"})
    assert inbox_ids(inbox_path) == ["evt-low-2"]
    with sqlite3.connect(inbox_path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert len(con.execute("SELECT inbox_id FROM inbox_identity").fetchall()) == 1


def test_a_client_hanging_up_before_the_answer_is_one_log_line(inbox_path, caplog, capfd):
    """The event is stored; the failed answer is logged as one line, with no traceback anywhere."""
    request_read, hung_up = threading.Event(), threading.Event()

    def clock() -> datetime:  # the handler calls it once the request is read: hang up right then
        request_read.set()
        hung_up.wait(10)
        return datetime.now(UTC)

    body = json.dumps(LOW_BALANCE).encode()
    headers = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(SECRET, body, datetime.now(UTC)).items())
    caplog.set_level(logging.INFO, logger="retention_pipeline.operations.webhooks")
    with serve("127.0.0.1", 0, SECRET, inbox_path, max_body_bytes=MAX_BODY, clock=clock) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(
                f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode()
                + body
            )
            assert request_read.wait(10)
            # Linger 0: closing sends a reset, as a sender that gives up does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        hung_up.set()
        wait_until(lambda: "disconnected" in caplog.text, "the disconnect to be logged")
    [line] = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert line in (
        "client 127.0.0.1 disconnected: BrokenPipeError",
        "client 127.0.0.1 disconnected: ConnectionResetError",
    )
    assert "Traceback" not in caplog.text + capfd.readouterr().err
    assert inbox_ids(inbox_path) == ["evt-low-1"]


def test_cli_prints_its_url_and_receives(tmp_path, inbox_path):
    process = cli({"METRONOME_WEBHOOK_SECRET": SECRET}, tmp_path)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(timeout=5) as http:
            assert deliver(http, url, json.dumps(LOW_BALANCE).encode()).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert (
        "stored id='evt-low-1' type='alerts.low_remaining_commit_balance_reached' customer_id='cus-1'"
        in stderr
    )
    assert SECRET not in stderr and "remaining_balance" not in stderr
    assert [row[0] for row in stored(inbox_path)] == ["evt-low-1"]


def test_cli_refuses_to_start_without_the_secret(tmp_path):
    process = cli({}, tmp_path)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode != 0
    assert stdout == ""
    assert "METRONOME_WEBHOOK_SECRET" in stderr
