"""The Pinterest plug-in against its sandbox: hashing, chunking, retries, auth, lists + audiences, read-back,
actalikes, the target and the resource. In-process transport, plus real loopback ports where it matters."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest

from retention_pipeline.config import ConfigError
from retention_pipeline.destinations import registry
from retention_pipeline.destinations.identity import email_sha256
from retention_pipeline.destinations.pinterest import PLUGIN
from retention_pipeline.destinations.pinterest import client as client_module
from retention_pipeline.destinations.pinterest.adapter import PinterestAdapter
from retention_pipeline.destinations.pinterest.client import (
    MAX_BODY_BYTES,
    PinterestAuthError,
    PinterestClient,
    PinterestError,
)
from retention_pipeline.destinations.pinterest.resource import PinterestResource, pinterest_target
from retention_pipeline.destinations.plugin import Change, SyncContext
from retention_pipeline.sandbox.pinterest import PinterestSandbox

TOKEN, ACCOUNT = "pinterest-user-token", "549756359984"
BASE = "http://pinterest.test/v5"
MARY = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
CONTEXT = SyncContext("sync-1", "daily", "2026-11-19", datetime(2026, 11, 20, tzinfo=UTC))
SEGMENT = SimpleNamespace(name="usage_drop_wow")  # the adapter reads only the segment's name


@pytest.fixture
def sandbox():
    return PinterestSandbox(access_token=TOKEN, ad_account_id=ACCOUNT)


def make_client(transport: httpx.BaseTransport, url: str = BASE, **options) -> PinterestClient:
    options = {"max_retries": 3, "backoff_seconds": 0.001, "max_backoff_seconds": 0.01} | options
    return PinterestClient(
        url=url, access_token=options.pop("token", TOKEN), ad_account_id=ACCOUNT,
        http_client=httpx.Client(transport=transport), **options,
    )  # fmt: skip


@pytest.fixture
def client(sandbox):
    with make_client(sandbox.transport()) as pinterest:
        yield pinterest


def hashes(count: int, offset: int = 0) -> list[str]:
    return [email_sha256(f"user{i}@example.com") for i in range(offset, offset + count)]


def new_list(client: PinterestClient, records: list[str] | None = None) -> str:
    return str(client.create_customer_list("retention audience 1a2b3c4d", records or hashes(1))["id"])


def patches(sandbox: PinterestSandbox) -> list:
    return [r for r in sandbox.requests if r.method == "PATCH"]


def rate_limit(times: int = 1, retry_after: str | None = None) -> dict:
    headers = {"x-ratelimit-limit": "400", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "30"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return {
        "times": times,
        "headers": headers,
        "body": {"code": 8, "message": "This request exceeded a rate limit."},
    }


def changes(records: list[str], operation: str = "add") -> list[Change]:
    return [Change(f"p{i}", operation, {"EMAIL": r}, f"h{i}") for i, r in enumerate(records)]


# --- payload ---------------------------------------------------------------------------------------------------


def test_payload_sql_is_the_sha256_of_the_email_and_null_without_one(con):
    rows = con.execute(
        f"WITH p AS (SELECT * FROM (VALUES ('mary@example.com'), (NULL)) AS t(email)) SELECT ({PLUGIN.payload_sql}\n) FROM p"
    ).fetchall()
    assert [None if v is None else json.loads(v) for (v,) in rows] == [{"EMAIL": MARY}, None]
    assert (
        email_sha256("  Mary@Example.com ") == MARY
    )  # the Python side agrees with the engine's normalization


# --- membership ------------------------------------------------------------------------------------------------


def test_records_go_up_in_ceil_records_over_limit_patches(sandbox):
    with make_client(sandbox.transport(), batch_records=1000) as client:
        list_id = new_list(client)
        records = hashes(2500)

        results = client.add(list_id, records)

        assert len(results) == len(patches(sandbox)) == math.ceil(2500 / 1000)
        assert [(r.start, r.stop, r.ok, r.operation) for r in results] == [
            (0, 1000, True, "ADD"), (1000, 2000, True, "ADD"), (2000, 2500, True, "ADD"),
        ]  # fmt: skip
        assert sandbox.members(list_id) == set(records)
        adapter = PinterestAdapter(client, {}, {SEGMENT.name: list_id})
        assert adapter.per_request_limit == 1000
        assert adapter.expected_requests(changes(records)) == 3


def test_add_then_remove_converges_and_the_counters_are_not_membership(client, sandbox):
    list_id = new_list(client, hashes(5))
    client.add(list_id, hashes(5))  # all already members
    (removed,) = client.remove(list_id, hashes(3) + hashes(2, offset=100))  # two were never members

    assert removed.ok and sandbox.members(list_id) == set(hashes(2, offset=3))
    listed = client.customer_list(list_id)
    assert (
        listed["num_uploaded_user_records"],
        listed["num_removed_user_records"],
        listed["num_batches"],
    ) == (10, 5, 3)
    assert (removed.num_uploaded_user_records, removed.num_removed_user_records) == (10, 5)
    assert listed["status"] == "TOO_SMALL"


def test_records_travel_as_one_comma_separated_string(sandbox):
    sent: list[dict] = []

    def spy(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            sent.append(json.loads(request.content))
        return sandbox.handle(request)

    with make_client(httpx.MockTransport(spy)) as client:
        list_id = new_list(client)
        client.remove(list_id, hashes(2))
    assert sent == [{"operation_type": "REMOVE", "records": ",".join(hashes(2))}]


def test_a_batch_size_beyond_1mb_is_split_by_body_size():
    sandbox = PinterestSandbox(access_token=TOKEN, ad_account_id=ACCOUNT, max_records=20_000)
    sizes: list[int] = []

    def spy(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            sizes.append(len(request.content))
        return sandbox.handle(request)

    with make_client(httpx.MockTransport(spy), batch_records=20_000) as client:
        assert client.per_request < 20_000
        results = client.add(new_list(client), hashes(20_000))
    assert len(results) == len(sizes) == 2 and all(r.ok for r in results)
    assert max(sizes) < MAX_BODY_BYTES


# --- retries and errors ------------------------------------------------------------------------------------------


def test_rate_limits_are_backed_off_then_succeed(client, sandbox):
    list_id = new_list(client)
    sandbox.faults.add(r"/customer_lists/\d+$", 429, method="PATCH", **rate_limit(times=2))

    (result,) = client.add(list_id, hashes(3))

    assert result.ok and result.attempts == 3 and sandbox.members(list_id) == set(hashes(3))


def test_retry_after_is_honoured_and_capped(client, sandbox, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", sleeps.append)
    list_id = new_list(client)
    sandbox.faults.add(r"/customer_lists/\d+$", 429, method="PATCH", **rate_limit(retry_after="0.005"))
    (waited,) = client.add(list_id, hashes(1))
    sandbox.faults.add(r"/customer_lists/\d+$", 429, method="PATCH", **rate_limit(retry_after="3600"))
    (refused,) = client.add(list_id, hashes(1))

    assert waited.ok and sleeps == [0.005]
    assert (refused.ok, refused.reason, refused.status, refused.code, refused.attempts) == (
        False, "rate_limited", 429, 8, 1,
    )  # fmt: skip
    assert "exceeds" in refused.message and "x-ratelimit-remaining=0" in refused.message


def test_the_sandbox_rate_limit_answers_429_code_8_with_headers(sandbox):
    sandbox.requests_per_second = 1
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(transport=sandbox.transport()) as http:
        first, second = (http.get(f"{BASE}/ad_accounts/{ACCOUNT}", headers=headers) for _ in range(2))
    assert first.status_code == 200
    assert (second.status_code, second.json()["code"]) == (429, 8)
    assert second.headers["x-ratelimit-remaining"] == "0" and "retry-after" not in second.headers


def test_5xx_exhausted_is_a_failed_result_and_other_errors_are_not_retried(client, sandbox):
    list_id = new_list(client)
    sandbox.faults.add(r"/customer_lists/\d+$", 503, method="PATCH", times=10)
    (server_error,) = client.add(list_id, hashes(1))
    sandbox.faults.clear()
    (unknown,) = client.add("999", hashes(1))

    assert (server_error.ok, server_error.reason, server_error.status, server_error.attempts) == (
        False, "server_error", 503, 4,
    )  # fmt: skip
    assert (unknown.ok, unknown.status, unknown.code, unknown.attempts) == (False, 404, 2, 1)


def test_creating_is_not_retried_when_the_first_attempt_may_have_landed(client, sandbox):
    sandbox.faults.add(r"/customer_lists$", 503, method="POST")
    with pytest.raises(PinterestError, match="HTTP 503"):
        client.create_customer_list("a", hashes(1))
    sandbox.faults.add(r"/customer_lists$", 429, method="POST", **rate_limit())
    created = client.create_customer_list("b", hashes(1))  # a 429 was never processed: retried

    posts = [r.status for r in sandbox.requests if r.method == "POST"]
    assert posts == [503, 429, 200] and created["name"] == "b"


def test_a_bad_token_raises_naming_the_variable(sandbox):
    with (
        make_client(sandbox.transport(), token="expired-token") as client,
        pytest.raises(PinterestAuthError, match="PINTEREST_ACCESS_TOKEN") as caught,
    ):
        client.add("643", hashes(1))
    assert "expired-token" not in str(caught.value) and isinstance(caught.value, ConfigError)
    assert sandbox.requests[-1].status == 401


def test_a_token_without_the_write_scope_raises_naming_the_variable(client, sandbox):
    sandbox.scopes = ("ads:read",)
    with pytest.raises(PinterestAuthError, match="HTTP 403, code 3") as caught:
        client.create_customer_list("a", hashes(1))
    assert "PINTEREST_ACCESS_TOKEN has the ads:read and ads:write scopes" in str(caught.value)
    assert sandbox.requests[-1].status == 403


def test_raw_emails_are_refused_by_the_client_before_anything_is_sent(client, sandbox):
    for records in (["mary@example.com"], [MARY.upper()], [MARY, ""], [email_sha256("a@b.co")[:40]]):
        with pytest.raises(ValueError, match="SHA-256") as caught:
            client.add("643", records)
        assert "mary@example.com" not in str(caught.value)
    with pytest.raises(ValueError):
        client.create_customer_list("a", ["mary@example.com"])
    with pytest.raises(ValueError, match="first records"):
        client.create_customer_list("a", [])
    assert sandbox.requests == []


def test_raw_emails_are_refused_by_the_sandbox_too(client, sandbox):
    list_id = new_list(client, [MARY])
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{BASE}/ad_accounts/{ACCOUNT}/customer_lists"
    with httpx.Client(transport=sandbox.transport()) as http:
        patch = http.patch(f"{url}/{list_id}", json={"operation_type": "ADD", "records": f"{MARY},ann@example.com"},
                           headers=headers)  # fmt: skip
        create = http.post(url, json={"name": "x", "records": "ann@example.com"}, headers=headers)
        too_many = http.patch(f"{url}/{list_id}", json={"operation_type": "ADD", "records": ",".join(hashes(10_001))},
                              headers=headers)  # fmt: skip
    assert [(r.status_code, r.json()["code"]) for r in (patch, create, too_many)] == [(400, 1)] * 3
    assert sandbox.members(list_id) == {MARY}


def test_echoed_emails_never_leave_the_client(client, sandbox):
    list_id = new_list(client)
    echo = {"code": 1, "message": "ann@example.com is invalid; see https://ops:hunter2@status.example/x"}
    sandbox.faults.add(r"/customer_lists/\d+$", 400, method="PATCH", body=echo)
    (refused,) = client.add(list_id, hashes(1))
    sandbox.faults.add(r"/audiences$", 400, method="POST", body=echo)
    with pytest.raises(PinterestError) as caught:
        client.create_audience("a", list_id)
    assert refused.message == "<email> is invalid; see https://status.example/x"
    assert "ann@" not in str(caught.value) and "hunter2" not in str(caught.value)


# --- the adapter -----------------------------------------------------------------------------------------------


def test_a_failed_chunk_fails_only_its_own_items(sandbox):
    patch_count = 0

    def second_chunk_fails(request: httpx.Request) -> httpx.Response:
        nonlocal patch_count
        if request.method == "PATCH":
            patch_count += 1
            if 2 <= patch_count <= 5:  # the second request and its three retries
                return httpx.Response(503, json={"code": 0, "message": "unavailable"})
        return sandbox.handle(request)

    with make_client(httpx.MockTransport(second_chunk_fails), batch_records=10) as client:
        list_id = new_list(client)
        adapter = PinterestAdapter(client, {}, {SEGMENT.name: list_id})
        records = hashes(25)

        report = adapter.send(SEGMENT, changes(records), CONTEXT)

    assert [(r.items, r.ok, r.http_status) for r in report.requests] == [
        (10, True, 200),
        (10, False, 503),
        (5, True, 200),
    ]
    assert [i.ok for i in report.items] == [True] * 10 + [False] * 10 + [True] * 5
    assert (
        report.items[10].reason.startswith("HTTP 503")
        and report.items[10].request_id == report.requests[1].request_id
    )
    assert sandbox.members(list_id) == set(records[:10] + records[20:])
    assert report.requests[0].detail["operation_type"] == "ADD"


def test_updates_remove_the_old_hash_then_add_the_new(client, sandbox):
    list_id = new_list(client, [MARY])
    adapter = PinterestAdapter(client, {}, {SEGMENT.name: list_id})
    new = email_sha256("mary.new@example.com")
    update = Change("p1", "update", {"EMAIL": new}, "h2", previous_payload={"EMAIL": MARY})

    report = adapter.send(SEGMENT, [update], CONTEXT)

    assert [r.operation for r in report.requests] == ["remove", "add"] and report.items[0].ok
    assert sandbox.members(list_id) == {new}


def test_create_object_makes_the_list_from_the_first_members_and_its_audience(client, sandbox):
    adapter = PinterestAdapter(client)
    members = [{"EMAIL": h} for h in hashes(3)]

    list_id = adapter.create_object(
        "retention audience 1a2b3c4d", "retention_pipeline segment audience", members
    )

    assert sandbox.members(list_id) == set(hashes(3))
    audience = client.audience_for_list(list_id)
    assert audience["audience_type"] == "CUSTOMER_LIST" and audience["rule"] == {"customer_list_id": list_id}
    assert adapter.audience_id(list_id) == audience["id"]
    assert audience["description"] == "retention_pipeline segment audience"


def test_create_object_without_members_sends_nothing(client, sandbox):
    with pytest.raises(PinterestError, match="only from records"):
        PinterestAdapter(client).create_object("retention audience 1a2b3c4d", "d")
    assert sandbox.requests == []


def test_read_back_reports_the_audience_size_once_ready(client, sandbox):
    adapter = PinterestAdapter(client)
    list_id = adapter.create_object("a", "d", [{"EMAIL": h} for h in hashes(99)])

    small = adapter.read_back(list_id)
    client.add(list_id, hashes(2, offset=99))
    ready = adapter.read_back(list_id)

    assert (small.matched, small.status) == (None, "TOO_SMALL")
    assert (ready.matched, ready.status) == (101, "READY") and "asynchronously" in ready.note


def test_a_failed_audience_call_keeps_the_list_and_read_back_creates_the_audience(client, sandbox):
    sandbox.faults.add(r"/audiences$", 503, method="POST")  # not retried: a create may have landed
    adapter = PinterestAdapter(client)

    list_id = adapter.create_object("a", "d", [{"EMAIL": h} for h in hashes(100)])
    first, second = adapter.read_back(list_id), PinterestAdapter(client).read_back(list_id)

    assert sandbox.members(list_id) == set(hashes(100))  # the list holds people: its id is returned anyway
    assert first.matched == second.matched == 100 and first.status == "READY"
    created = [r.status for r in sandbox.requests if r.method == "POST" and r.path.endswith("/audiences")]
    assert created == [503, 200]  # the second adapter found the audience the first one created


def test_audiences_are_found_across_pages(client, sandbox, monkeypatch):
    monkeypatch.setattr(client_module, "AUDIENCE_PAGE_SIZE", 2)
    lists = [new_list(client) for _ in range(5)]
    for list_id in lists:
        client.create_audience(f"a{list_id}", list_id)

    found = client.audience_for_list(lists[-1])

    assert found["rule"]["customer_list_id"] == lists[-1]
    assert len([r for r in sandbox.requests if r.method == "GET" and r.path.endswith("/audiences")]) == 3
    assert client.audience_for_list("999") is None


def test_an_actalike_needs_a_ready_seed(client, sandbox):
    adapter = PinterestAdapter(client)
    small = adapter.create_object("small", "d", [{"EMAIL": h} for h in hashes(50)])
    seed = adapter.create_object("seed", "d", [{"EMAIL": h} for h in hashes(100)])

    with pytest.raises(PinterestError, match="TOO_SMALL"):
        adapter.create_lookalike(small, "small lookalike", {"country": "US", "percentage": 5})
    with pytest.raises(PinterestError, match="HTTP 400, code 1: seed audience"):
        client.create_actalike("direct", [adapter.audience_id(small)])  # the sandbox refuses it too
    actalike_id = adapter.create_lookalike(seed, "seed lookalike", {"country": "GB", "percentage": 5})

    actalike = sandbox.audience(actalike_id)
    assert actalike["audience_type"] == "ACTALIKE"
    assert actalike["rule"] == {"seed_id": [adapter.audience_id(seed)], "country": "GB", "percentage": 5}
    with pytest.raises(ValueError, match="percentage"):
        client.create_actalike("bad", [adapter.audience_id(seed)], percentage=11)


# --- loopback --------------------------------------------------------------------------------------------------


def test_the_client_over_a_real_loopback_port(sandbox):
    with (
        sandbox.serve() as server,
        make_client(httpx.HTTPTransport(), url=f"{server.url}/v5", batch_records=40) as client,
    ):
        adapter = PinterestAdapter(client)
        records = hashes(150)
        list_id = adapter.create_object("a", "d", [{"EMAIL": h} for h in records[:40]])
        adapter.objects[SEGMENT.name] = list_id
        sandbox.faults.add(r"/customer_lists/\d+$", 429, method="PATCH", **rate_limit())

        report = adapter.send(SEGMENT, changes(records), CONTEXT)
        readback = adapter.read_back(list_id)

    assert len(report.requests) == math.ceil(150 / 40) and all(i.ok for i in report.items)
    assert sandbox.members(list_id) == set(records) and (readback.matched, readback.status) == (150, "READY")
    assert [r.status for r in patches(sandbox)][:2] == [429, 200]


# --- target, resource, plug-in -----------------------------------------------------------------------------------


def test_target_is_the_sandbox_without_either_variable():
    target = pinterest_target()
    assert target.is_sandbox and target.variables == ("PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID")


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"PINTEREST_ACCESS_TOKEN": "tok"}, "PINTEREST_AD_ACCOUNT_ID"),
        ({"PINTEREST_AD_ACCOUNT_ID": "1"}, "PINTEREST_ACCESS_TOKEN"),
    ],
)
def test_a_partial_configuration_names_the_missing_variable(monkeypatch, env, missing):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=missing) as caught:
        pinterest_target()
    assert "tok" not in str(caught.value)


def test_a_full_configuration_names_the_account_and_host(monkeypatch):
    monkeypatch.setenv("PINTEREST_ACCESS_TOKEN", "tok")
    monkeypatch.setenv("PINTEREST_AD_ACCOUNT_ID", ACCOUNT)
    target = pinterest_target()
    assert target.identity == f"ad_account {ACCOUNT} @ api.pinterest.com/v5"
    assert target.settings["url"] == "https://api.pinterest.com/v5" and "tok" not in target.identity
    assert pinterest_target(url="http://127.0.0.1:9/v5").identity == f"ad_account {ACCOUNT} @ 127.0.0.1:9/v5"
    for bad, named in ((dict(ad_account_id="act_1"), "PINTEREST_AD_ACCOUNT_ID"),
                       (dict(url="https://api.pinterest.com"), "PINTEREST_API_URL")):  # fmt: skip
        with pytest.raises(ConfigError, match=named):
            pinterest_target(**bad)


def test_production_without_credentials_is_an_error(monkeypatch):
    monkeypatch.setenv("RETENTION_ENV", "production")
    with pytest.raises(ConfigError, match="PINTEREST_ACCESS_TOKEN and PINTEREST_AD_ACCOUNT_ID"):
        pinterest_target()


def test_the_resource_opens_the_sandbox_without_credentials(monkeypatch):
    for name in ("PINTEREST_ACCESS_TOKEN", "PINTEREST_AD_ACCOUNT_ID", "PINTEREST_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PINTEREST_BATCH_RECORDS", "50")
    connection = PinterestResource().connection()
    adapter = PLUGIN.adapter(connection, {}, {})
    records = hashes(120)

    list_id = adapter.create_object("a", "d", [{"EMAIL": h} for h in records[:50]])
    adapter.objects[SEGMENT.name] = list_id
    report = adapter.send(SEGMENT, changes(records), CONTEXT)

    assert connection.mode == "sandbox" and connection.target.is_sandbox
    assert adapter.per_request_limit == 50 and len(report.requests) == 3
    assert connection.sandbox.members(list_id) == set(records)
    assert adapter.read_back(list_id).matched == 120


def test_the_plugin_is_registered():
    assert registry.plugin("pinterest") is PLUGIN
    assert registry.spec("pinterest").objects_key == "customer_lists"
    assert PLUGIN.state_target("ad_account 1 @ h/v5", "643", {}) == "ad_account 1 @ h/v5 / customer_list 643"


class TestWithCredentials:
    """Credentials set and the URL pointed at a loopback sandbox: the resource behaves as against the real host."""

    def test_real_mode_probes_the_ad_account(self, monkeypatch, server, sandbox):
        monkeypatch.setenv("PINTEREST_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("PINTEREST_AD_ACCOUNT_ID", ACCOUNT)
        monkeypatch.setenv("PINTEREST_API_URL", f"{server.url}/v5")

        connection = PinterestResource().open()

        assert (connection.mode, connection.base_url, connection.sandbox) == ("api", f"{server.url}/v5", None)
        assert sandbox.requests[0].path == f"/v5/ad_accounts/{ACCOUNT}"  # the probe
        list_id = new_list(connection.client)
        assert sandbox.members(list_id) == set(hashes(1))

        monkeypatch.setenv("PINTEREST_AD_ACCOUNT_ID", "43")
        with pytest.raises(ConfigError, match="PINTEREST_AD_ACCOUNT_ID='43'.*AdAccount not found"):
            PinterestResource().open()

        monkeypatch.setenv("PINTEREST_AD_ACCOUNT_ID", ACCOUNT)
        monkeypatch.setenv("PINTEREST_ACCESS_TOKEN", "stale-token")
        with pytest.raises(ConfigError, match="PINTEREST_ACCESS_TOKEN") as caught:
            PinterestResource().open()
        assert "stale-token" not in str(caught.value)
