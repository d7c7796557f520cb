"""The Google Data Manager client against its sandbox on a loopback port: chunking, guards, quota retries."""

from __future__ import annotations

import httpx
import pytest

from retention_pipeline.destinations.google.client import GoogleAuthError, GoogleDataManagerClient
from retention_pipeline.destinations.identity import email_sha256, google_phone_sha256
from retention_pipeline.sandbox.google import QUOTA_LIMIT, GoogleDataManagerSandbox

TOKEN = "ya29.sandbox-token"
LIST_ID = "5550001"
DESTINATIONS = [
    {
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
        "productDestinationId": LIST_ID,
    }
]
GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}


@pytest.fixture
def sandbox():
    return GoogleDataManagerSandbox(access_token=TOKEN)


@pytest.fixture
def client(server):
    with GoogleDataManagerClient(
        url=server.url, access_token=TOKEN, max_retries=3, backoff_seconds=0.01, max_backoff_seconds=0.5
    ) as google:
        yield google


def member(i: int, consent: dict | None = GRANTED) -> dict:
    identifiers = [
        {"emailAddress": email_sha256(f"user{i}@example.com")},
        {"phoneNumber": google_phone_sha256(f"+1415555{i:04d}")},
    ]
    found = {"userData": {"userIdentifiers": identifiers}}
    return {**found, "consent": consent} if consent else found


def raw_ingest(server, body: dict) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/audienceMembers:ingest", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )


def valid_body(members: list[dict]) -> dict:
    return {
        "destinations": DESTINATIONS,
        "audienceMembers": members,
        "encoding": "HEX",
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
    }


def test_members_go_up_in_10k_requests_each_with_a_request_id(client, sandbox):
    members = [member(i) for i in range(25_000)]

    results = client.ingest(DESTINATIONS, members)

    assert [(r.start, r.stop, r.ok) for r in results] == [
        (0, 10_000, True),
        (10_000, 20_000, True),
        (20_000, 25_000, True),
    ]
    assert [r.request_id for r in results] == sandbox.request_ids
    assert len(sandbox.requests) == 3
    assert sandbox.member_count(LIST_ID) == 25_000

    (removed,) = client.remove(DESTINATIONS, [{"userData": m["userData"]} for m in members[:10]])
    assert removed.ok and sandbox.member_count(LIST_ID) == 24_990
    assert email_sha256("user0@example.com") not in sandbox.members(LIST_ID)


def test_request_level_consent_covers_members_without_their_own(client, sandbox):
    (result,) = client.ingest(DESTINATIONS, [member(1, consent=None)], consent=GRANTED)
    assert result.ok and sandbox.members(LIST_ID, "phoneNumber") == {google_phone_sha256("+14155550001")}


def test_client_refuses_unhashed_missing_consent_and_too_many_identifiers(client, sandbox):
    raw = {"userData": {"userIdentifiers": [{"emailAddress": "dana@example.com"}]}, "consent": GRANTED}
    with pytest.raises(ValueError, match="SHA-256") as caught:
        client.ingest(DESTINATIONS, [member(0), raw])
    assert "dana@example.com" not in str(caught.value)
    with pytest.raises(ValueError, match="SHA-256"):
        client.remove(DESTINATIONS, [{"userData": {"userIdentifiers": [{"phoneNumber": "+14155550132"}]}}])
    with pytest.raises(ValueError, match="consent"):
        client.ingest(DESTINATIONS, [member(0, consent=None)])
    with pytest.raises(ValueError, match="consent"):
        client.ingest(DESTINATIONS, [member(0, consent={**GRANTED, "adPersonalization": "CONSENT_DENIED"})])
    crowded = {
        "userData": {"userIdentifiers": [{"emailAddress": email_sha256(f"{i}@x.io")} for i in range(11)]}
    }
    with pytest.raises(ValueError, match="1-10"):
        client.remove(DESTINATIONS, [crowded])
    assert sandbox.requests == []


def test_sandbox_enforces_limits_hashing_consent_and_terms(server, sandbox):
    cases = {
        "too many members": valid_body([member(i) for i in range(10_001)]),
        "unhashed": valid_body(
            [{"userData": {"userIdentifiers": [{"emailAddress": "dana@example.com"}]}, "consent": GRANTED}]
        ),
        "no consent": valid_body([member(1, consent=None)]),
        "no terms": {k: v for k, v in valid_body([member(1)]).items() if k != "termsOfService"},
        "no encoding": {k: v for k, v in valid_body([member(1)]).items() if k != "encoding"},
        "11 identifiers": valid_body(
            [
                {
                    "userData": {
                        "userIdentifiers": [{"emailAddress": email_sha256(f"{i}@x.io")} for i in range(11)]
                    },
                    "consent": GRANTED,
                }
            ]
        ),
    }
    for name, body in cases.items():
        response = raw_ingest(server, body)
        assert response.status_code == 400, name
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT", name
    assert sandbox.member_count(LIST_ID) == 0
    assert raw_ingest(server, valid_body([member(1)])).status_code == 200


def test_429_resource_exhausted_then_success(client, sandbox):
    exhausted = {
        "error": {
            "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "metadata": {"quota_limit": QUOTA_LIMIT}}],
        }
    }  # fmt: skip
    sandbox.faults.add(r"audienceMembers:ingest$", 429, times=2, body=exhausted)

    (result,) = client.ingest(DESTINATIONS, [member(1)])

    assert result.ok and result.attempts == 3 and result.request_id


def test_sandbox_quota_429_names_the_quota_and_is_waited_out(server, sandbox):
    sandbox.requests_per_second = 1
    with GoogleDataManagerClient(url=server.url, access_token=TOKEN, max_retries=0) as impatient:
        (first,) = impatient.ingest(DESTINATIONS, [member(1)])
        (limited,) = impatient.ingest(DESTINATIONS, [member(2)])
    with GoogleDataManagerClient(
        url=server.url, access_token=TOKEN, max_retries=5, backoff_seconds=0.3
    ) as patient:
        (waited,) = patient.ingest(DESTINATIONS, [member(2)])

    assert first.ok and waited.ok and waited.attempts > 1
    assert (limited.ok, limited.status, limited.reason, limited.quota_limit) == (
        False,
        429,
        "rate_limited",
        QUOTA_LIMIT,
    )


def test_5xx_exhausted_is_a_failed_result(client, sandbox):
    sandbox.faults.add(r"audienceMembers:remove$", 503, times=10)
    (result,) = client.remove(DESTINATIONS, [{"userData": member(1)["userData"]}])
    assert (result.ok, result.status, result.reason, result.attempts) == (False, 503, "server_error", 4)


def test_invalid_argument_comes_back_on_the_result(client, sandbox):
    sandbox.faults.add(
        r"audienceMembers:ingest$",
        400,
        times=1,
        body={"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad list"}},
    )
    (result,) = client.ingest(DESTINATIONS, [member(1)])
    assert (result.ok, result.error_status, result.message, result.attempts) == (
        False,
        "INVALID_ARGUMENT",
        "bad list",
        1,
    )


def test_a_bad_token_raises(server, sandbox):
    google = GoogleDataManagerClient(url=server.url, access_token="expired")
    with google, pytest.raises(GoogleAuthError, match="GOOGLE_ACCESS_TOKEN") as caught:
        google.ingest(DESTINATIONS, [member(1)])
    assert "expired" not in str(caught.value)
    response = httpx.post(f"{server.url}/v1/audienceMembers:ingest", json={})
    assert response.status_code == 401 and response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_echoed_emails_phones_and_url_credentials_never_leave_the_client(client, sandbox):
    echo = "ann@example.com (+1 415 555 2671) is invalid; see https://ops:hunter2@status.example/x"
    sandbox.faults.add(
        r"audienceMembers:ingest$",
        400,
        body={"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": echo}},
    )
    (result,) = client.ingest(DESTINATIONS, [member(1)])
    assert (result.ok, result.error_status, result.message) == (
        False,
        "INVALID_ARGUMENT",
        "<email> (<phone>) is invalid; see https://status.example/x",
    )
