"""The Meta client against its sandbox on a loopback port: sessions, row limits, hashing guard, throttles."""

from __future__ import annotations

import json

import httpx
import pytest

from retention_pipeline.destinations.identity import email_sha256, meta_phone_sha256
from retention_pipeline.destinations.meta.client import MetaAuthError, MetaClient, MetaError
from retention_pipeline.sandbox.meta import MetaSandbox

TOKEN, ACCOUNT = "meta-system-user-token", "1234567890"


@pytest.fixture
def sandbox():
    return MetaSandbox(access_token=TOKEN, ad_account_id=ACCOUNT)


@pytest.fixture
def client(server):
    with MetaClient(
        graph_url=f"{server.url}/v25.0", access_token=TOKEN, ad_account_id=f"act_{ACCOUNT}", max_retries=3,
        backoff_seconds=0.01, max_backoff_seconds=0.05,
    ) as meta:  # fmt: skip
        yield meta


@pytest.fixture
def audience(client):
    return client.create_audience("churn_risk")


def email_rows(count: int, offset: int = 0) -> list[list[str]]:
    return [[email_sha256(f"user{i}@example.com"), f"cust_{i}"] for i in range(offset, offset + count)]


def users_requests(sandbox: MetaSandbox) -> list:
    return [r for r in sandbox.requests if r.path.endswith("/users")]


def throttle(code: int = 80003, regain_minutes: int = 0) -> dict:
    usage = {
        ACCOUNT: [
            {"type": "custom_audience", "call_count": 100, "estimated_time_to_regain_access": regain_minutes}
        ]
    }
    return {
        "body": {
            "error": {
                "message": "Too many calls",
                "type": "OAuthException",
                "code": code,
                "error_subcode": 2446079,
            }
        },
        "headers": {"X-Business-Use-Case-Usage": json.dumps(usage)},
    }


def test_rows_go_up_in_10k_requests_of_one_session(client, sandbox, audience):
    rows = email_rows(25_000)

    results = client.add_users(audience, ["EMAIL", "EXTERN_ID"], rows, session_id=9778993)

    assert len(results) == len(users_requests(sandbox)) == 3
    assert [(r.batch_seq, r.start, r.stop) for r in results] == [
        (1, 0, 10_000),
        (2, 10_000, 20_000),
        (3, 20_000, 25_000),
    ]
    assert [r.num_received for r in results] == [10_000, 20_000, 25_000]  # cumulative per session
    assert all(r.ok and r.num_invalid_entries == 0 for r in results)
    assert sandbox.session(audience, 9778993)["stage"] == "finished"  # last_batch_flag on the third request
    assert len(sandbox.members(audience)) == 25_000


def test_remove_by_extern_id_and_by_hash(client, sandbox, audience):
    client.add_users(audience, ["EMAIL", "EXTERN_ID"], email_rows(5), session_id=1)

    by_id = client.remove_users(audience, ["EXTERN_ID"], [["cust_0"], ["cust_1"]], session_id=2)
    by_hash = client.remove_users(audience, ["EMAIL"], [[email_sha256("user2@example.com")]], session_id=3)

    assert all(r.ok for r in by_id + by_hash)
    assert sandbox.members(audience, "EXTERN_ID") == {"cust_3", "cust_4"}
    assert {r.method for r in users_requests(sandbox)} == {"POST", "DELETE"}


def test_unhashed_identifiers_are_refused_before_anything_is_sent(client, sandbox, audience):
    rows = [[email_sha256("ok@example.com"), ""], ["mary@example.com", meta_phone_sha256("+15559876543")]]
    with pytest.raises(ValueError, match="rows\\[1\\] column EMAIL") as caught:
        client.add_users(audience, ["EMAIL", "PHONE"], rows, session_id=1)
    assert "mary@example.com" not in str(caught.value)
    with pytest.raises(ValueError, match="PHONE"):
        client.add_users(audience, ["PHONE"], [["15559876543"]], session_id=1)
    with pytest.raises(ValueError, match="EMAIL"):
        client.remove_users(audience, ["EMAIL"], [[email_sha256("x@y.z").upper()]], session_id=1)
    assert users_requests(sandbox) == []


def test_sandbox_counts_unhashed_rows_invalid_and_does_not_add_them(server, sandbox, audience):
    body = {
        "payload": {
            "schema": ["EMAIL", "PHONE"],
            "data": [["mary@example.com", ""], [email_sha256("a@b.co"), ""], ["", "15559876543"]],
        },
        "session": {"session_id": 5, "batch_seq": 1, "last_batch_flag": True},
    }
    response = httpx.post(
        f"{server.url}/v25.0/{audience}/users", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status_code == 200
    answer = response.json()
    assert answer["num_received"] == 3 and answer["num_invalid_entries"] == 2
    assert set(answer["invalid_entry_samples"]) == {"mary@example.com", "15559876543"}
    assert sandbox.members(audience) == {email_sha256("a@b.co")}


def test_sandbox_refuses_more_than_10k_rows(server, sandbox, audience):
    body = {"payload": {"schema": ["EXTERN_ID"], "data": [[f"c{i}"] for i in range(10_001)]}}
    response = httpx.post(f"{server.url}/v25.0/{audience}/users", json=body, params={"access_token": TOKEN})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100
    assert sandbox.members(audience, "EXTERN_ID") == set()


def test_throttles_are_backed_off_then_succeed(client, sandbox, audience):
    sandbox.faults.add(r"/users$", 400, times=2, **throttle(80003))
    sandbox.faults.add(r"/users$", 400, times=1, **throttle(17))

    (result,) = client.add_users(audience, ["EMAIL", "EXTERN_ID"], email_rows(3), session_id=1)

    assert result.ok and result.attempts == 4 and result.num_received == 3


def test_regain_access_estimate_is_used_but_capped(client, sandbox, audience, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("retention_pipeline.destinations.meta.client.time.sleep", sleeps.append)
    sandbox.faults.add(r"/users$", 400, times=1, **throttle(80003, regain_minutes=30))
    (result,) = client.add_users(audience, ["EXTERN_ID"], [["c1"]], session_id=1)
    assert result.ok and len(sleeps) == 1  # the 30 min estimate, capped at max_backoff_seconds
    assert 0 < sleeps[0] <= client.max_backoff_seconds


def test_throttle_exhausted_is_a_failed_result(client, sandbox, audience):
    sandbox.faults.add(r"/users$", 400, times=10, **throttle(80003))
    (result,) = client.add_users(audience, ["EXTERN_ID"], [["c1"]], session_id=1)
    assert (result.ok, result.reason, result.status, result.attempts) == (False, "throttled", 400, 4)


def test_sandbox_rate_limit_speaks_the_custom_audience_throttle(server, sandbox, audience):
    sandbox.requests_per_second = 1
    sandbox.regain_access_minutes = 1
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"payload": {"schema": ["EXTERN_ID"], "data": [["c1"]]}}
    responses = [
        httpx.post(f"{server.url}/v25.0/{audience}/users", json=body, headers=headers) for _ in range(2)
    ]
    assert responses[0].status_code == 200
    assert responses[1].json()["error"]["code"] == 80003
    usage = json.loads(responses[1].headers["X-Business-Use-Case-Usage"])
    assert usage[ACCOUNT][0]["estimated_time_to_regain_access"] == 1


def test_5xx_exhausted_is_a_failed_result(client, sandbox, audience):
    sandbox.faults.add(r"/users$", 503, times=10)
    results = client.add_users(audience, ["EXTERN_ID"], [["c1"]], session_id=1)
    assert [(r.ok, r.reason, r.status) for r in results] == [(False, "server_error", 503)]


def test_other_graph_errors_come_back_on_the_result(client, sandbox, audience):
    (unknown,) = client.add_users("999", ["EXTERN_ID"], [["c1"]], session_id=1)
    assert (unknown.ok, unknown.error_code, unknown.error_subcode, unknown.attempts) == (False, 100, 33, 1)

    client.add_users(audience, ["EXTERN_ID"], [["c1"]], session_id=7)  # one batch: the session finishes
    (closed,) = client.add_users(audience, ["EXTERN_ID"], [["c2"]], session_id=7)
    assert (closed.ok, closed.error_code) == (False, 2650)
    assert sandbox.members(audience, "EXTERN_ID") == {"c1"}


def test_a_bad_token_raises(server, sandbox):
    meta = MetaClient(graph_url=f"{server.url}/v25.0", access_token="expired", ad_account_id=ACCOUNT)
    with meta, pytest.raises(MetaAuthError, match="META_ACCESS_TOKEN") as caught:
        meta.add_users("1", ["EXTERN_ID"], [["c1"]], session_id=1)
    assert "expired" not in str(caught.value)
    assert sandbox.requests[-1].status == 401


def test_echoed_emails_phones_and_url_credentials_never_leave_the_client(client, sandbox, audience):
    echo = "ann@example.com (+1 415 555 2671) is invalid; see https://ops:hunter2@status.example/x"
    graph_error = {"error": {"message": echo, "type": "OAuthException", "code": 100, "fbtrace_id": "t"}}
    sandbox.faults.add(r"/users$", 400, body=graph_error)
    (refused,) = client.add_users(audience, ["EXTERN_ID"], [["c1"]], session_id=1)
    hashed = email_sha256("ann@example.com")
    sandbox.faults.add(r"/users$", 200, body={"audience_id": audience, "session_id": 2, "num_received": 1,
                                              "num_invalid_entries": 1, "invalid_entry_samples": {hashed: echo}})  # fmt: skip
    (sampled,) = client.add_users(audience, ["EMAIL"], [[hashed]], session_id=2)
    sandbox.faults.add(r"/customaudiences$", 400, body=graph_error)
    with pytest.raises(MetaError) as account_error:
        client.create_audience("vip")

    masked = "<email> (<phone>) is invalid; see https://status.example/x"
    assert (refused.ok, refused.error_code, refused.message) == (False, 100, masked)
    assert sampled.ok and sampled.invalid_entry_samples == {hashed: masked}  # the key still matches the row
    kept = [refused.message, *sampled.invalid_entry_samples.values(), str(account_error.value)]
    assert [s for s in ("ann@example.com", "415 555", "hunter2") for text in kept if s in text] == []
