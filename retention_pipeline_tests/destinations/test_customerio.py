"""The Customer.io client against its sandbox on a loopback port: packing, per-op outcomes, retries, segments."""

from __future__ import annotations

import base64
import json
import math
import re
import time

import httpx
import pytest

from retention_pipeline.destinations.customerio.client import (
    CustomerIoAuthError,
    CustomerIoClient,
    CustomerIoError,
    make_event_id,
)
from retention_pipeline.sandbox.customerio import CustomerIoSandbox

SITE_ID, API_KEY, APP_KEY = "site-1", "track-secret-key", "app-secret-key"


@pytest.fixture
def sandbox():
    return CustomerIoSandbox(site_id=SITE_ID, api_key=API_KEY, app_api_key=APP_KEY)


@pytest.fixture
def sent_sizes():
    return []


@pytest.fixture
def client(server, sent_sizes):
    """Small backoff so retry tests stay fast; an event hook records every request body's size."""
    http = httpx.Client(timeout=10, event_hooks={"request": [lambda r: sent_sizes.append(len(r.content))]})
    with CustomerIoClient(
        server.url,
        server.url,
        SITE_ID,
        API_KEY,
        APP_KEY,
        http_client=http,
        max_retries=3,
        backoff_seconds=0.01,
    ) as cio:
        yield cio
    http.close()


def identify(person_id: str, **attributes: object) -> dict:
    return {
        "type": "person",
        "identifiers": {"id": person_id},
        "action": "identify",
        "attributes": attributes,
    }


def event(person_id: str, name: str = "segment_entered", **extra: object) -> dict:
    return {"type": "person", "identifiers": {"id": person_id}, "action": "event", "name": name, **extra}


def batch_requests(sandbox: CustomerIoSandbox) -> list:
    return [r for r in sandbox.requests if r.path == "/api/v2/batch"]


# --- packing -----------------------------------------------------------------------------------------------------


def test_ops_are_packed_into_the_fewest_requests_under_500_kb(client, sandbox, sent_sizes):
    ops = [identify(f"p{i}", blob="x" * 29_900) for i in range(40)]  # ~30 KB each, 1.2 MB in all
    op_sizes = [len(json.dumps(op, separators=(",", ":")).encode()) for op in ops]

    results = client.batch(ops)

    assert all(r.ok for r in results)
    assert len(sent_sizes) == len(batch_requests(sandbox)) == 3
    assert max(sent_sizes) <= 500_000
    assert len(sent_sizes) == math.ceil(
        sum(op_sizes) / (500_000 - 12)
    )  # no request left room for the next op
    assert [r.request for r in results] == sorted(r.request for r in results)  # order kept
    assert len(sandbox.people()) == 40


def test_an_op_over_32_kb_is_never_sent(client, sandbox):
    results = client.batch([identify("small"), identify("huge", blob="x" * 33_000), identify("small2")])

    assert [r.ok for r in results] == [True, False, True]
    assert results[1].reason == "item_too_large" and results[1].status is None and results[1].request is None
    assert len(batch_requests(sandbox)) == 1
    assert sandbox.person(id="huge") is None


def test_sandbox_refuses_a_batch_over_500_kb_and_an_op_over_32_kb(server, sandbox):
    auth = (SITE_ID, API_KEY)
    too_big = {"batch": [identify(f"p{i}", blob="x" * 30_000) for i in range(17)]}
    response = httpx.post(f"{server.url}/api/v2/batch", json=too_big, auth=auth)
    assert response.status_code == 400
    assert response.json()["errors"][0]["reason"] == "too_large"
    assert sandbox.people() == []

    mixed = {"batch": [identify("a"), identify("b", blob="x" * 33_000), identify("c")]}
    response = httpx.post(f"{server.url}/api/v2/batch", json=mixed, auth=auth)
    assert response.status_code == 207
    assert [e["batch_index"] for e in response.json()["errors"]] == [1]
    assert {p["id"] for p in sandbox.people()} == {"a", "c"}


# --- per-op outcomes ---------------------------------------------------------------------------------------------


def test_207_errors_map_back_to_the_callers_op_indexes(client, sandbox):
    sandbox.reject_identifiers("bad-1", "bad-2", reason="identifier_blocked")
    ops = [
        identify(
            "huge", blob="x" * 40_000
        ),  # skipped locally, so request positions differ from caller indexes
        identify("ok-1"),
        identify("bad-1"),
        event("ok-1", id=make_event_id("ok-1", "entered")),
        identify("ok-2"),
        event("bad-2"),
    ]

    results = client.batch(ops)

    assert [r.ok for r in results] == [False, True, False, True, True, False]
    assert results[2].reason == results[5].reason == "identifier_blocked"
    assert results[2].status == 207 and results[2].field == "identifiers"
    assert {p["id"] for p in sandbox.people()} == {"ok-1", "ok-2"}
    assert [e["name"] for e in sandbox.accepted_events()] == ["segment_entered"]


def test_sandbox_reports_invalid_ops_per_index(server, sandbox):
    ops = [
        identify("fine"),
        {"type": "person", "action": "identify", "attributes": {}},  # no identifiers
        {"type": "person", "identifiers": {"id": "x"}, "action": "teleport"},  # bad action
        {
            "type": "person",
            "identifiers": {"id": "x"},
            "action": "event",
            "name": "  ",
        },  # event without a name
        {
            "type": "person",
            "identifiers": {"id": "x", "email": "x@y.z"},
            "action": "identify",
        },  # two identifiers
        {"type": "person", "identifiers": {"phone": "555-1234"}, "action": "identify"},  # phone not E.164
    ]
    response = httpx.post(f"{server.url}/api/v2/batch", json={"batch": ops}, auth=(SITE_ID, API_KEY))

    assert response.status_code == 207
    errors = {e["batch_index"]: e for e in response.json()["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5]
    assert errors[2]["field"] == "action" and errors[3]["field"] == "name"
    assert [p["id"] for p in sandbox.people()] == ["fine"]


def test_a_whole_batch_400_is_bisected_to_the_bad_op(client, sandbox):
    ops = [identify(f"p{i}") for i in range(8)]
    ops[5] = {"type": "persn", "identifiers": {"id": "p5"}, "action": "identify"}  # not a valid envelope: 400

    results = client.batch(ops)

    assert [r.ok for r in results] == [True] * 5 + [False] + [True] * 2
    assert results[5].status == 400 and results[5].field == "type"
    assert {p["id"] for p in sandbox.people()} == {f"p{i}" for i in range(8)} - {"p5"}
    # 8 → [0-3] ok, [4-7] 400 → [4,5] 400 → [4] ok, [5] 400; [6,7] ok
    assert [r.status for r in batch_requests(sandbox)] == [400, 200, 400, 400, 200, 400, 200]


# --- retries -----------------------------------------------------------------------------------------------------


def test_429_then_success_honours_retry_after(client, sandbox):
    sandbox.faults.add("/api/v2/batch", 429, times=2, headers={"Retry-After": "0"})

    results = client.batch([identify("a"), identify("b")])

    assert all(r.ok and r.attempts == 3 for r in results)
    assert [r.status for r in batch_requests(sandbox)] == [429, 429, 200]


def test_429_without_retry_after_backs_off_exponentially(client, sandbox):
    sandbox.faults.add("/api/v2/batch", 429, times=1)
    assert client.batch([identify("a")])[0].ok


def test_retry_after_beyond_the_cap_fails_without_waiting(server, sandbox, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("retention_pipeline.destinations.customerio.client.time.sleep", sleeps.append)
    sandbox.faults.add("/api/v2/batch", 429, times=1, headers={"Retry-After": "3600"})
    with CustomerIoClient(server.url, server.url, SITE_ID, API_KEY, max_backoff_seconds=1) as cio:
        (result,) = cio.batch([identify("a")])
    assert sleeps == []
    assert not result.ok and result.reason == "rate_limited" and "3600" in result.message


def test_5xx_exhausted_returns_failed_ops_not_an_exception(client, sandbox):
    sandbox.faults.add("/api/v2/batch", 503, times=10)

    results = client.batch([identify("a"), identify("b")])

    assert [(r.ok, r.status, r.reason, r.attempts) for r in results] == [(False, 503, "server_error", 4)] * 2
    assert len(batch_requests(sandbox)) == 4  # 1 + max_retries
    assert sandbox.people() == []


def test_timeouts_are_retried_and_reported():
    sandbox = CustomerIoSandbox()
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 2:
            raise httpx.ReadTimeout("slow", request=request)
        return sandbox.handle(request)

    def never(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("unreachable", request=request)

    url = "http://127.0.0.1:9"  # never dialled: the mock transports answer in-process
    with httpx.Client(transport=httpx.MockTransport(flaky)) as http:
        cio = CustomerIoClient(url, url, "s", "k", http_client=http, backoff_seconds=0.001)
        (result,) = cio.batch([identify("a")])
    assert result.ok and result.attempts == 3

    with httpx.Client(transport=httpx.MockTransport(never)) as http:
        cio = CustomerIoClient(url, url, "s", "k", http_client=http, max_retries=1, backoff_seconds=0.001)
        (result,) = cio.batch([identify("a")])
    assert (result.ok, result.reason, result.status, result.attempts) == (False, "timeout", None, 2)


def test_sandbox_rate_limit_answers_429_and_the_client_rides_it_out(sandbox, server):
    sandbox.requests_per_second = 5
    with CustomerIoClient(
        server.url, server.url, SITE_ID, API_KEY, max_retries=8, backoff_seconds=0.1
    ) as cio:
        results = [cio.batch([identify(f"p{i}")])[0] for i in range(8)]
    assert all(r.ok for r in results)
    limited = [r for r in sandbox.requests if r.status == 429]
    assert limited, "the limit should have been hit at least once"


def test_client_paces_itself(server):
    with CustomerIoClient(server.url, server.url, SITE_ID, API_KEY, requests_per_second=50) as cio:
        started = time.monotonic()
        for i in range(6):
            cio.batch([identify(f"p{i}")])
    assert time.monotonic() - started >= 5 / 50


def test_rejected_credentials_raise_without_leaking_them(server):
    with (
        CustomerIoClient(server.url, server.url, SITE_ID, "wrong-key") as cio,
        pytest.raises(CustomerIoAuthError) as caught,
    ):
        cio.batch([identify("mary@example.com")])
    assert "CUSTOMERIO_API_KEY" in str(caught.value)
    assert "wrong-key" not in str(caught.value) and "mary@example.com" not in str(caught.value)


def test_sandbox_auth_shapes(server):
    assert httpx.post(f"{server.url}/api/v2/batch", json={"batch": []}).status_code == 401
    wrong = "Basic " + base64.b64encode(b"site-1:nope").decode()
    response = httpx.post(f"{server.url}/api/v2/batch", json={"batch": []}, headers={"Authorization": wrong})
    assert response.status_code == 401 and response.json() == {"meta": {"error": "Unauthorized request"}}
    # The App API takes the App key as Bearer, not the Track key as Basic.
    assert httpx.get(f"{server.url}/v1/segments", auth=(SITE_ID, API_KEY)).status_code == 401
    assert (
        httpx.get(f"{server.url}/v1/segments", headers={"Authorization": f"Bearer {APP_KEY}"}).status_code
        == 200
    )


# --- events ------------------------------------------------------------------------------------------------------


def test_event_ids_are_deterministic_ulid_shaped():
    first = make_event_id("seg-7", "person-42", "entered", "2026-11-20")
    assert first == make_event_id("seg-7", "person-42", "entered", "2026-11-20")
    assert first != make_event_id("seg-7", "person-42", "exited", "2026-11-20")
    assert make_event_id(7, 42) == make_event_id("7", "42")
    assert re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", first)
    timed = make_event_id("x", timestamp=1_700_000_000)
    assert timed[:10] == "01HF7YAT00"  # the ULID time prefix of 2023-11-14T22:13:20Z
    with pytest.raises(ValueError):
        make_event_id()


def test_sandbox_drops_duplicate_event_ids(client, sandbox):
    logical = event(
        "42", id=make_event_id("churn_risk", "42", "entered"), attributes={"segment": "churn_risk"}
    )

    first = client.batch([identify("42"), logical])
    retry = client.batch([logical])  # e.g. resent after a timeout that had in fact been processed

    assert all(r.ok for r in first + retry)
    assert len(sandbox.accepted_events()) == 1
    assert sandbox.duplicate_events_dropped == 1
    assert sandbox.accepted_events()[0]["cio_id"] == sandbox.person(id="42")["cio_id"]


def test_identify_merges_and_deletes_attributes(client, sandbox):
    client.batch([identify("42", plan="pro", seats=3, email="Ann@Example.com")])
    client.batch([identify("42", plan="team", seats=None)])

    person = sandbox.person(email="ann@example.com")
    assert person["id"] == "42" and person["attributes"] == {"plan": "team"}


# --- manual segments ---------------------------------------------------------------------------------------------


def test_segment_add_and_remove_chunk_at_1000_ids(client, sandbox):
    client.batch([identify(f"p{i}") for i in range(2_400)])
    segment = client.create_segment("churn_risk")
    ids = [f"p{i}" for i in range(2_500)]  # 100 of them unknown to the workspace

    added = client.segment_add(segment["id"], ids)

    assert [(r.start, r.stop, r.ok) for r in added] == [
        (0, 1000, True),
        (1000, 2000, True),
        (2000, 2500, True),
    ]
    assert client.segment_customer_count(segment["id"]) == 2_400  # unknown ids dropped without a word
    removed = client.segment_remove(segment["id"], ids[:1500])
    assert len(removed) == 2 and all(r.ok for r in removed)
    assert sandbox.segment_members(segment["id"]) == {f"p{i}" for i in range(1500, 2400)}
    segment_calls = [r for r in sandbox.requests if "/api/v1/segments/" in r.path]
    assert len(segment_calls) == 5 and all(r.query == {"id_type": "id"} for r in segment_calls)


def test_segment_by_email_and_unknown_segment(client, sandbox):
    client.batch([identify("42", email="ann@example.com")])
    segment_id = sandbox.create_segment("vip")

    (ok,) = client.segment_add(segment_id, ["ann@example.com"], id_type="email")
    (missing,) = client.segment_add(999, ["ann@example.com"], id_type="email")

    assert ok.ok and sandbox.segment_members(segment_id) == {"42"}
    assert (missing.ok, missing.status, missing.reason) == (False, 404, "segment_not_found")


def test_sandbox_refuses_more_than_1000_ids(server, sandbox):
    segment_id = sandbox.create_segment("big")
    response = httpx.post(
        f"{server.url}/api/v1/segments/{segment_id}/add_customers",
        params={"id_type": "id"},
        json={"ids": [str(i) for i in range(1001)]},
        auth=(SITE_ID, API_KEY),
    )
    assert response.status_code == 400 and "1000" in response.json()["meta"]["errors"][0]


def test_segment_5xx_exhausted_is_a_failed_result(client, sandbox):
    segment_id = sandbox.create_segment("s")
    sandbox.faults.add(r"/add_customers$", 500, times=10)
    (result,) = client.segment_add(segment_id, ["a"])
    assert (result.ok, result.status, result.reason, result.attempts) == (False, 500, "server_error", 4)


def test_reject_ops_rule_forces_a_207(client, sandbox):
    sandbox.reject_ops(lambda op: "blocked_event" if op.get("name") == "spam" else None)
    results = client.batch([event("42", "spam"), event("42", "fine")])
    assert [(r.ok, r.reason) for r in results] == [(False, "blocked_event"), (True, None)]


def test_sandbox_app_api_segment_lifecycle(client, server, sandbox):
    client.batch([identify(f"p{i}", email=f"p{i}@example.com") for i in range(3)])
    segment_id = client.create_segment("vip", "top accounts")["id"]
    client.segment_add(segment_id, ["p0", "p1", "p2"])
    app = {"Authorization": f"Bearer {APP_KEY}"}

    listed = httpx.get(f"{server.url}/v1/segments", headers=app).json()["segments"]
    first = httpx.get(f"{server.url}/v1/segments/{segment_id}/membership?limit=2", headers=app).json()
    rest = httpx.get(
        f"{server.url}/v1/segments/{segment_id}/membership?limit=2&start={first['next']}", headers=app
    )

    assert [s["name"] for s in listed] == ["vip"] and listed[0]["type"] == "manual"
    assert first["ids"] == ["p0", "p1"] and rest.json()["ids"] == ["p2"] and "next" not in rest.json()
    assert first["identifiers"][0]["email"] == "p0@example.com"
    assert httpx.delete(f"{server.url}/v1/segments/{segment_id}", headers=app).status_code == 204
    assert httpx.get(f"{server.url}/v1/segments/{segment_id}", headers=app).status_code == 404


# --- what Customer.io says back ----------------------------------------------------------------------------------

ECHOED = ("ann@example.com", "+1 415 555 2671", "hunter2")
# An error that quotes the refused address and phone, and a URL with credentials, as vendors do.
ECHO = {
    "reason": "invalid_email ann@example.com",
    "field": "email: ann@example.com",
    "message": "address ann@example.com (+1 415 555 2671) refused; see https://ops:hunter2@status.example/x",
}


def test_echoed_emails_phones_and_url_credentials_never_leave_the_client(client, sandbox):
    sandbox.faults.add("/api/v2/batch", 207, body={"errors": [{"batch_index": 0, **ECHO}]})
    (per_op,) = client.batch([identify("42", email="ann@example.com")])
    sandbox.faults.add("/api/v2/batch", 400, body={"errors": [ECHO]})
    (whole,) = client.batch([identify("42", email="ann@example.com")])
    segment_id = sandbox.create_segment("vip")
    sandbox.faults.add(r"/add_customers$", 400, body={"meta": {"errors": [ECHO["message"]]}})
    (segment,) = client.segment_add(segment_id, ["ann@example.com"], id_type="email")
    sandbox.faults.add(r"^/v1/segments$", 400, body={"meta": {"error": ECHO["message"]}})
    with pytest.raises(CustomerIoError) as app_error:
        client.create_segment("vip")

    assert [(r.ok, r.status) for r in (per_op, whole, segment)] == [(False, 207), (False, 400), (False, 400)]
    assert per_op.reason == whole.reason == "invalid_email <email>" and per_op.field == "email: <email>"
    assert segment.message == "address <email> (<phone>) refused; see https://status.example/x"
    kept = [per_op.reason, per_op.field, per_op.message, whole.reason, whole.field, whole.message, segment.message,
            str(app_error.value)]  # fmt: skip
    assert [value for value in ECHOED for text in kept if value in text] == []
