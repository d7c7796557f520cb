"""The TikTok plug-in against its sandbox, in process and on a loopback port: hashing, batches, retries, objects.

Vendor facts cited as §n are from shared/reference/ad-audiences-tiktok-pinterest.md (TikTok is its section 1).
"""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import httpx
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations import registry
from retention_pipeline.destinations.identity import (
    email_sha256,
    google_phone_sha256,
    meta_phone_sha256,
    sha256_hex,
)
from retention_pipeline.destinations.plugin import Change, SyncContext
from retention_pipeline.destinations.tiktok import PLUGIN
from retention_pipeline.destinations.tiktok.adapter import TikTokAdapter
from retention_pipeline.destinations.tiktok.client import TikTokAuthError, TikTokClient, TikTokError
from retention_pipeline.destinations.tiktok.resource import SANDBOX_ADVERTISER, TikTokResource, tiktok_target
from retention_pipeline.sandbox.tiktok import NO_TOKEN, TikTokSandbox

TOKEN, ADVERTISER = "tiktok-long-term-token", "7178918106775994370"
BASE = "http://tiktok.test/open_api/v1.3"
# §1.5 test vectors; the phone one keeps the '+' (Meta's vector hashes 15559876543).
MARY = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
MARY_PHONE = "a6e349c7a8850f27ebcfa1865854e845c074da83ff19384d4b4c9df78357fa5a"
MAPPING = r"/segment/mapping/$"
CONTEXT = SyncContext("sync-1", "daily", "2026-11-19", datetime(2026, 11, 20))
SEGMENT = SimpleNamespace(name="churn_risk")  # the adapter reads only the segment's name
TIKTOK_ENV = (
    "TIKTOK_ACCESS_TOKEN",
    "TIKTOK_ADVERTISER_ID",
    "TIKTOK_API_URL",
    "TIKTOK_BATCH_ROWS",
    "RETENTION_ENV",
)


@pytest.fixture
def sandbox():
    return TikTokSandbox(access_token=TOKEN, advertiser_id=ADVERTISER)


def make_client(sandbox=None, *, url=BASE, token=TOKEN, http=None, **options) -> TikTokClient:
    settings = {"max_retries": 3, "backoff_seconds": 0.001, "max_backoff_seconds": 0.01} | options
    http = http or httpx.Client(transport=sandbox.transport())
    return TikTokClient(
        api_url=url, access_token=token, advertiser_id=ADVERTISER, http_client=http, **settings
    )


@pytest.fixture
def client(sandbox):
    with make_client(sandbox) as tiktok:
        yield tiktok


@pytest.fixture
def audience(sandbox):
    return sandbox.create_audience("churn_risk")


def rows(count: int, offset: int = 0) -> list[list[str]]:
    return [[email_sha256(f"user{i}@example.com"), ""] for i in range(offset, offset + count)]


def mapping_requests(sandbox: TikTokSandbox) -> list:
    return [r for r in sandbox.requests if r.path.endswith("/segment/mapping/")]


def post(sandbox: TikTokSandbox, path: str, body: dict, token: str | None = TOKEN) -> httpx.Response:
    """A raw request to the in-process sandbox, as any HTTP client would send it."""
    with httpx.Client(transport=sandbox.transport()) as http:
        return http.post(f"{BASE}{path}", json=body, headers={"Access-Token": token} if token else {})


def envelope(code: int, message: str = "") -> dict:
    return {"body": {"code": code, "message": message, "request_id": "r-1", "data": {}}}


def change(
    i: int, operation: str = "add", email: str | None = None, phone: str | None = None, **old
) -> Change:
    payload = {"EMAIL_SHA256": email_sha256(email or f"user{i}@example.com") or "",
               "PHONE_SHA256": google_phone_sha256(phone) or ""}  # fmt: skip
    return Change(f"p{i}", operation, payload, f"h{i}", **old)


# --- hashing ---------------------------------------------------------------------------------------------------


def test_payload_sql_hashes_the_reference_vectors(con):
    """§1.5: email trimmed + lowercased, phone E.164 WITH '+'; '' for an unknown id, NULL for neither."""
    assert sha256_hex("mary@example.com") == MARY and sha256_hex("+15559876543") == MARY_PHONE
    assert google_phone_sha256("+15559876543") == MARY_PHONE != meta_phone_sha256("+15559876543")
    people = [
        ("mary@example.com", "+15559876543"),
        ("mary@example.com", None),
        (None, "+15559876543"),
        ("mary@example.com", "15559876543"),  # not E.164: no phone hash
        (None, None),
        (None, "15559876543"),
    ]
    values = ", ".join(f"({i}, ?, ?)" for i in range(len(people)))
    sql = f"""
        WITH p(n, email, phone) AS (VALUES {values}),
             r AS (SELECT 'daily' AS cadence), f AS (SELECT 1 AS usage_7d)
        SELECT ({PLUGIN.payload_sql.strip()}\n) FROM p, r, f ORDER BY n
    """
    payloads = [
        json.loads(v) if v else None
        for (v,) in con.execute(sql, [x for pair in people for x in pair]).fetchall()
    ]

    assert payloads == [
        {"EMAIL_SHA256": MARY, "PHONE_SHA256": MARY_PHONE},
        {"EMAIL_SHA256": MARY, "PHONE_SHA256": ""},
        {"EMAIL_SHA256": "", "PHONE_SHA256": MARY_PHONE},
        {"EMAIL_SHA256": MARY, "PHONE_SHA256": ""},
        None,
        None,
    ]
    assert registry.plugin("tiktok") is PLUGIN
    assert PLUGIN.state_target("advertiser 1 @ h", "42", {}) == "advertiser 1 @ h / audience 42"


# --- membership ------------------------------------------------------------------------------------------------


def test_rows_go_up_in_batches_of_batch_rows(sandbox, audience):
    with make_client(sandbox, batch_rows=1000) as client:
        results = client.mapping("add", audience, rows(2500))

    assert len(results) == len(mapping_requests(sandbox)) == 3  # ⌈2500 / 1000⌉
    assert [(r.start, r.stop, r.ok, r.code) for r in results] == [
        (0, 1000, True, 0), (1000, 2000, True, 0), (2000, 2500, True, 0)
    ]  # fmt: skip
    assert all(r.request_id for r in results)
    assert sandbox.cover_num(audience) == 2500
    adapter = TikTokAdapter(client, {}, {SEGMENT.name: audience})
    assert adapter.per_request_limit == 1000
    assert adapter.expected_requests([change(i) for i in range(2500)]) == 3


def test_the_wire_body_is_the_segment_api_format(sandbox, audience):
    """§1.3: advertiser_ids array, action, id_schema, one row per person, {} for an unknown position; §1.1 header."""
    sent: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return sandbox.handle(request)

    with make_client(http=httpx.Client(transport=httpx.MockTransport(capture))) as client:
        (result,) = client.mapping("add", audience, [[MARY, MARY_PHONE], ["", MARY_PHONE], [MARY, ""]])

    assert result.ok
    (request,) = sent
    assert (request.method, request.url.path) == ("POST", "/open_api/v1.3/segment/mapping/")
    assert request.headers["Access-Token"] == TOKEN and "authorization" not in request.headers
    entry = {"id": MARY, "audience_ids": [audience]}
    phone = {"id": MARY_PHONE, "audience_ids": [audience]}
    assert json.loads(request.content) == {
        "advertiser_ids": [ADVERTISER],
        "action": "add",
        "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [[entry, phone], [{}, phone], [entry, {}]],
    }
    assert sandbox.persons(audience) == [{"EMAIL_SHA256": MARY, "PHONE_SHA256": MARY_PHONE}]  # one person


def test_add_then_delete_converges_through_a_loopback_server(server, sandbox, audience):
    """The adapter over real HTTP: adds, an update (remove old phone, add new), removes; membership follows."""
    with make_client(url=f"{server.url}/open_api/v1.3", http=httpx.Client(), batch_rows=2) as client:
        adapter = TikTokAdapter(client, {}, {SEGMENT.name: audience})
        first = adapter.send(SEGMENT, [change(i, phone=f"+1555000000{i}") for i in range(5)], CONTEXT)
        assert all(item.ok for item in first.items) and len(first.requests) == 3  # ⌈5 / 2⌉
        assert sandbox.cover_num(audience) == 5

        old = change(1, phone="+15550000001")
        second = adapter.send(
            SEGMENT,
            [
                change(0, "remove", phone="+15550000000"),
                change(1, "update", phone="+15559876543", previous_payload=old.payload),
                change(4, "remove", phone="+15550000004"),
                change(9, "remove"),  # not a member: a no-op (§3.3)
            ],
            CONTEXT,
        )

    assert all(item.ok for item in second.items)
    assert [r.operation for r in second.requests] == ["remove", "remove", "add"]
    assert sandbox.members(audience) == {email_sha256(f"user{i}@example.com") for i in (1, 2, 3)}
    assert sandbox.members(audience, "PHONE_SHA256") == {
        MARY_PHONE, google_phone_sha256("+15550000002"), google_phone_sha256("+15550000003")
    }  # fmt: skip
    assert {r.status for r in sandbox.requests} == {200}


def test_throttles_and_tiktok_side_errors_are_backed_off_then_succeed(client, sandbox, audience):
    """§1.6/§1.7: throttles are HTTP 200 with code 40100/40133/40016 (no Retry-After); 5xxxx and HTTP 5xx retry."""
    sandbox.faults.add(MAPPING, 200, times=1, **envelope(40100, "Too many requests"))
    sandbox.faults.add(MAPPING, 200, times=1, **envelope(40133, "QPS reaches limit for current path"))
    sandbox.faults.add(MAPPING, 200, times=1, **envelope(40016))
    (throttled,) = client.mapping("add", audience, rows(3))
    assert (throttled.ok, throttled.attempts) == (True, 4)

    sandbox.faults.add(MAPPING, 200, times=1, **envelope(50000, "System error"))
    sandbox.faults.add(MAPPING, 503, times=1)
    (failed_then_ok,) = client.mapping("add", audience, rows(1, 3))
    assert (failed_then_ok.ok, failed_then_ok.attempts) == (True, 3)
    assert sandbox.cover_num(audience) == 4


def test_the_sandbox_rate_limit_is_a_40100_envelope_the_client_waits_out(sandbox, audience):
    sandbox.requests_per_second = 1
    answers = [post(sandbox, "/segment/mapping/", {}) for _ in range(2)]
    assert answers[0].json()["code"] == 40002  # within the limit: the empty body is refused on its merits
    assert answers[1].status_code == 200 and answers[1].json()["code"] == 40100  # §1.6: HTTP 200, no headers
    assert "retry-after" not in answers[1].headers

    limited = TikTokSandbox(access_token=TOKEN, advertiser_id=ADVERTISER, requests_per_second=5)
    audience = limited.create_audience("a")
    with make_client(
        limited, batch_rows=1, max_retries=10, backoff_seconds=0.05, max_backoff_seconds=0.4
    ) as client:
        results = client.mapping("add", audience, rows(7))
    assert all(r.ok for r in results) and limited.cover_num(audience) == 7
    assert len(mapping_requests(limited)) > 7  # some answers were the throttle, retried


def test_exhausted_throttle_is_a_failed_result(client, sandbox, audience):
    sandbox.faults.add(MAPPING, 200, times=10, **envelope(40100))
    (result,) = client.mapping("add", audience, rows(1))
    assert (result.ok, result.reason, result.code, result.attempts) == (False, "throttled", 40100, 4)
    assert sandbox.cover_num(audience) == 0


@pytest.mark.parametrize("code", [40102, 40104, 40105, 40106, 40119])
def test_token_codes_raise_a_config_error_naming_the_variable(client, sandbox, audience, code):
    """§1.7: token expired/empty/invalid/not for this advertiser/other company: not retryable."""
    sandbox.faults.add(
        MAPPING, 200, times=5, **envelope(code, "Access token is incorrect or has been revoked.")
    )
    with pytest.raises(TikTokAuthError, match="TIKTOK_ACCESS_TOKEN") as caught:
        client.mapping("add", audience, rows(1))
    assert isinstance(caught.value, ConfigError) and f"code {code}" in str(caught.value)
    assert len(mapping_requests(sandbox)) == 1  # not retried


def test_a_wrong_token_or_advertiser_raises_and_the_token_is_never_in_the_message(sandbox, audience):
    with make_client(sandbox, token="expired-token") as wrong, pytest.raises(TikTokAuthError) as caught:
        wrong.mapping("add", audience, rows(1))
    assert "expired-token" not in str(caught.value) and "40105" in str(caught.value)
    other = TikTokClient(api_url=BASE, access_token=TOKEN, advertiser_id="123",
                         http_client=httpx.Client(transport=sandbox.transport()))  # fmt: skip
    with other, pytest.raises(TikTokAuthError, match="TIKTOK_ADVERTISER_ID"):
        other.create_audience("x")
    missing = post(sandbox, "/segment/audience/", {}, token=None)
    assert (
        missing.status_code == 200
        and missing.json()["code"] == 40104
        and missing.json()["message"] == NO_TOKEN
    )


def test_raw_identifiers_are_refused_by_the_client_before_anything_is_sent(client, sandbox, audience):
    with pytest.raises(ValueError, match=r"rows\[1\] EMAIL_SHA256") as caught:
        client.mapping("add", audience, [[MARY, ""], ["mary@example.com", MARY_PHONE]])
    assert "mary@example.com" not in str(caught.value)
    with pytest.raises(ValueError, match="PHONE_SHA256"):
        client.mapping("delete", audience, [["", "+15559876543"]])
    with pytest.raises(ValueError, match="EMAIL_SHA256"):
        client.mapping("add", audience, [[MARY.upper(), ""]])
    with pytest.raises(ValueError, match="no identifier"):
        client.mapping("add", audience, [["", ""]])
    with pytest.raises(ValueError, match="id_schema"):
        client.mapping("add", audience, [[MARY]], ["EMAIL"])
    assert sandbox.requests == []


def test_the_sandbox_refuses_raw_identifiers_without_echoing_them(sandbox, audience):
    body = {"advertiser_ids": [ADVERTISER], "action": "add", "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
            "batch_data": [[{"id": MARY, "audience_ids": [audience]}, {}],
                           [{"id": "mary@example.com", "audience_ids": [audience]}, {}]]}  # fmt: skip
    answer = post(sandbox, "/segment/mapping/", body).json()
    assert answer["code"] == 40000 and "batch_data[1][0]" in answer["message"]
    assert "mary@example.com" not in answer["message"]
    assert sandbox.cover_num(audience) == 0  # all or nothing: the valid row was not added either


def test_the_sandbox_speaks_the_wire_rules(sandbox, audience):
    """§1.1: trailing slash or HTTP 404, wrong method HTTP 405; §1.7: unknown audience 40007, too many ids 40011."""
    transport = sandbox.transport()
    with httpx.Client(transport=transport, headers={"Access-Token": TOKEN}) as http:
        assert http.post(f"{BASE}/segment/mapping", json={}).status_code == 404
        assert http.get(f"{BASE}/segment/mapping/").status_code == 405

    def mapping(audience_id: str, count: int) -> dict:
        body = {"advertiser_ids": [ADVERTISER], "action": "add", "id_schema": ["EMAIL_SHA256"],
                "batch_data": [[{"id": r[0], "audience_ids": [audience_id]}] for r in rows(count)]}  # fmt: skip
        return post(sandbox, "/segment/mapping/", body).json()

    assert mapping("404404", 1)["code"] == 40007
    assert mapping(audience, 1001)["code"] == 40011
    accepted = mapping(audience, 1000)
    assert (accepted["code"], accepted["message"], accepted["data"]) == (0, "OK", {})
    with make_client(
        url=BASE.removesuffix("/open_api/v1.3"), http=httpx.Client(transport=transport)
    ) as wrong:
        (lost,) = wrong.mapping("add", audience, rows(1))
    assert (lost.ok, lost.status, lost.reason) == (False, 404, "http_error")


def test_too_many_ids_halves_the_batch():
    """§1.7 40011 "split the batch"; §3.1 the cap is undocumented, so a configured size above it still converges."""
    small = TikTokSandbox(access_token=TOKEN, advertiser_id=ADVERTISER, max_rows=300)
    audience = small.create_audience("a")
    with make_client(small, batch_rows=1000) as client:
        results = client.mapping("add", audience, rows(1000))
    assert [(r.start, r.stop) for r in results] == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert all(r.ok for r in results) and small.cover_num(audience) == 1000
    assert len(mapping_requests(small)) == 6  # 1000 and 500 refused, then four of 250


def test_a_failed_batch_fails_only_its_own_items(sandbox, audience):
    """§1.3: no per-row result, so a request's outcome is every row's; other requests are unaffected."""
    seen = []

    def fail_second_batch(request: httpx.Request) -> None:
        if request.url.path.endswith("/segment/mapping/"):
            seen.append(request)
            if len(seen) == 2:  # the second batch and its three retries meet a TikTok-side error
                sandbox.faults.add(
                    MAPPING, 200, times=4, **envelope(50002, "Internal error for mary@example.com")
                )

    http = httpx.Client(transport=sandbox.transport(), event_hooks={"request": [fail_second_batch]})
    with make_client(http=http, batch_rows=2) as client:
        adapter = TikTokAdapter(client, {}, {SEGMENT.name: audience})
        report = adapter.send(SEGMENT, [change(i) for i in range(6)], CONTEXT)

    assert [r.ok for r in report.requests] == [True, False, True]
    assert [item.ok for item in report.items] == [True, True, False, False, True, True]
    failed = report.items[2]
    assert failed.reason == "HTTP 200, code 50002 after 4 attempts"
    assert failed.request_id == report.requests[1].request_id
    assert report.requests[1].detail["code"] == 50002
    assert sandbox.members(audience) == {email_sha256(f"user{i}@example.com") for i in (0, 1, 4, 5)}


def test_vendor_text_is_clipped_and_never_carries_pii_or_the_token(client, sandbox, audience):
    echo = f"bad row mary@example.com (+1 415 555 2671), token {TOKEN}"
    sandbox.faults.add(MAPPING, 200, **envelope(40002, echo))
    (refused,) = client.mapping("add", audience, rows(1))
    sandbox.faults.add(r"/segment/audience/$", 200, **envelope(40002, echo))
    with pytest.raises(TikTokError) as caught:
        client.create_audience("vip")
    for text in (refused.message, str(caught.value)):
        assert "mary@example.com" not in text and "415 555" not in text and TOKEN not in text
    assert (refused.ok, refused.reason, refused.code, refused.attempts) == (False, "api_error", 40002, 1)


# --- objects ---------------------------------------------------------------------------------------------------


def test_create_read_back_and_lookalike(client, sandbox):
    adapter = TikTokAdapter(client, {}, {})
    audience = adapter.create_object("retention_churn_risk", "ignored: the Segment API has no description")
    assert sandbox.audiences[audience]["name"] == "retention_churn_risk"
    assert sandbox.audiences[audience]["type"] == "Partner Audience"

    client.mapping("add", audience, rows(99))
    back = adapter.read_back(audience)
    assert (back.matched, back.status, back.note) == (99, "NOT_VALID", "TikTok updates size in 24-48 h")

    with pytest.raises(TikTokError, match="40002"):  # §1.8: the seed needs at least 100 users
        adapter.create_lookalike(audience, "churn_risk_lal", {"location_ids": ["6252001"]})
    client.mapping("add", audience, rows(1, 99))
    lookalike = adapter.create_lookalike(audience, "churn_risk_lal", {"location_ids": [6252001]})
    assert sandbox.audiences[lookalike]["lookalike_spec"] == {
        "source_audience_id": audience, "audience_size": "BALANCED", "location_ids": ["6252001"]
    }  # fmt: skip
    broad = adapter.create_lookalike(audience, "broad", {"audience_size": "BROAD", "include_source": False})
    assert sandbox.audiences[broad]["lookalike_spec"]["audience_size"] == "BROAD"
    with pytest.raises(TikTokError, match="40002"):  # a lookalike cannot seed a lookalike
        adapter.create_lookalike(lookalike, "lal_of_lal", {})

    with pytest.raises(ValueError, match="audience_size"):
        adapter.create_lookalike(audience, "x", {"audience_size": "HUGE"})
    with pytest.raises(ValueError, match="country"):
        adapter.create_lookalike(audience, "x", {"country": "US"})
    with pytest.raises(TikTokError, match="40007"):
        adapter.read_back("404404")
    assert adapter.read_back(audience).matched == 100


# --- target and resource ---------------------------------------------------------------------------------------


def test_tiktok_target_sandbox_partial_and_full(monkeypatch):
    assert tiktok_target().is_sandbox
    with pytest.raises(ConfigError, match="TIKTOK_ADVERTISER_ID must be set too"):
        tiktok_target(token="t")
    monkeypatch.setenv("TIKTOK_ADVERTISER_ID", ADVERTISER)
    with pytest.raises(ConfigError, match="TIKTOK_ACCESS_TOKEN must be set too"):
        tiktok_target()
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
    target = tiktok_target()
    assert target.identity == f"advertiser {ADVERTISER} @ business-api.tiktok.com/open_api/v1.3"
    assert target.settings == {"token": TOKEN, "advertiser_id": ADVERTISER,
                               "url": "https://business-api.tiktok.com/open_api/v1.3"}  # fmt: skip
    assert TOKEN not in target.identity
    assert tiktok_target(url="http://127.0.0.1:9/open_api/v1.3/").identity == (
        f"advertiser {ADVERTISER} @ 127.0.0.1:9/open_api/v1.3"
    )
    with pytest.raises(ConfigError, match="TIKTOK_ADVERTISER_ID"):
        tiktok_target(advertiser_id="act_1")
    for name in TIKTOK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETENTION_ENV", "production")
    with pytest.raises(ConfigError, match="TIKTOK_ACCESS_TOKEN and TIKTOK_ADVERTISER_ID must be set"):
        tiktok_target()


def test_the_resource_opens_a_sandbox_with_no_settings(monkeypatch):
    for name in TIKTOK_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TIKTOK_BATCH_ROWS", "250")
    resource = TikTokResource()
    connection = resource.connection()
    try:
        assert (connection.mode, connection.target.identity) == ("sandbox", "sandbox")
        assert isinstance(connection.sandbox, TikTokSandbox)
        assert connection.sandbox.advertiser_id == connection.client.advertiser_id == SANDBOX_ADVERTISER
        adapter = PLUGIN.adapter(connection, {}, {})
        audience = adapter.create_object("churn_risk", "")
        adapter.objects[SEGMENT.name] = audience
        report = adapter.send(SEGMENT, [change(i) for i in range(600)], CONTEXT)
        assert adapter.per_request_limit == 250 and len(report.requests) == 3
        assert connection.sandbox.cover_num(audience) == 600 == adapter.read_back(audience).matched
    finally:
        connection.client.close()


def test_the_resource_probes_the_real_api_once(server, sandbox, monkeypatch):
    monkeypatch.setenv("TIKTOK_ADVERTISER_ID", ADVERTISER)
    monkeypatch.setenv("TIKTOK_API_URL", f"{server.url}/open_api/v1.3")
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", "wrong-token")
    with pytest.raises(TikTokAuthError, match="TIKTOK_ACCESS_TOKEN"):
        TikTokResource().open()
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="TIKTOK_ADVERTISER_ID|TIKTOK_ACCESS_TOKEN"):
        TikTokResource(advertiser_id="1").open()
    with pytest.raises(ConfigError, match="pinned version"):
        TikTokResource(api_url=server.url).open()

    sandbox.requests.clear()
    connection = TikTokResource(batch_rows=500).open()
    with connection.client as client:
        assert (connection.mode, connection.base_url, client.batch_rows) == (
            "api", f"{server.url}/open_api/v1.3", 500
        )  # fmt: skip
        assert [(r.method, r.path, r.query["page_size"]) for r in sandbox.requests] == [
            ("GET", "/open_api/v1.3/dmp/custom_audience/list/", "1")
        ]
        assert client.create_audience("a") in sandbox.audiences
