"""Audience objects through the adapters: create, read the size back, seed lookalikes (Meta and Customer.io).

What the sync engine calls when destinations.yaml has no id for a segment (`create_object`), after a sync
(`read_back`) and for a declared lookalike (`create_lookalike`), each against its vendor's sandbox through an
in-process transport. The lookalike request is also checked against Meta's own SDK (facebook-business): the
parameter names, the `subtype` enum and the parameter types AdAccount.create_custom_audience declares.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime

import httpx
import pytest
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.adobjects.lookalikespec import LookalikeSpec
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession

from retention_pipeline.destinations.customerio.adapter import CustomerIoAdapter
from retention_pipeline.destinations.customerio.client import CustomerIoClient, CustomerIoError
from retention_pipeline.destinations.identity import email_sha256
from retention_pipeline.destinations.meta.adapter import MetaAdapter
from retention_pipeline.destinations.meta.client import AUDIENCE_FIELDS, MetaClient, MetaError
from retention_pipeline.destinations.plugin import Change, ReadBack, SyncContext
from retention_pipeline.destinations.routing import default_name
from retention_pipeline.sandbox.customerio import CustomerIoSandbox
from retention_pipeline.sandbox.meta import MetaSandbox
from retention_pipeline.segments.project import load_segments

TOKEN, ACCOUNT = "meta-objects-token", "1234567890"
SITE_ID, API_KEY, APP_KEY = "site-1", "track-secret-key", "app-secret-key"
AS_OF = datetime(2026, 11, 20, 10, 30)


def hashed_rows(count: int, offset: int = 0) -> list[list[str]]:
    return [[email_sha256(f"user{i}@example.com"), ""] for i in range(offset, offset + count)]


@pytest.fixture
def meta_sandbox():
    return MetaSandbox(access_token=TOKEN, ad_account_id=ACCOUNT)


@pytest.fixture
def sent():
    """JSON bodies our client posts to customaudiences, in order."""
    return []


@pytest.fixture
def meta(meta_sandbox, sent):
    def record(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/customaudiences") and "json" in request.headers.get(
            "content-type", ""
        ):
            sent.append(json.loads(request.content))
        return meta_sandbox.handle(request)

    with (
        httpx.Client(transport=httpx.MockTransport(record)) as http,
        MetaClient(
            graph_url="http://127.0.0.1/v25.0", access_token=TOKEN, ad_account_id=f"act_{ACCOUNT}",
            http_client=http, max_retries=0,
        ) as client,
    ):  # fmt: skip
        yield client


@pytest.fixture
def adapter(meta):
    return MetaAdapter(meta, None, {})


def seeded(adapter: MetaAdapter, members: int, name: str | None = None) -> str:
    """An audience created through the adapter with `members` hashed rows added by the client."""
    audience = adapter.create_object(name or default_name(f"seed{members}"), "retention pipeline audience")
    if members:
        results = adapter.client.add_users(audience, MetaAdapter.SCHEMA, hashed_rows(members), session_id=7)
        assert all(r.ok for r in results)
    return audience


# --- Meta: create and read back --------------------------------------------------------------------------------


def test_meta_create_object_returns_the_new_audience_id(adapter, meta_sandbox, sent):
    name = default_name("usage_drop_wow")  # what the engine names objects: neutral, stable per segment

    audience = adapter.create_object(name, "Accounts whose usage fell week over week")

    assert audience.isdigit()
    stored = meta_sandbox.audience(audience)
    assert (stored["name"], stored["subtype"], stored["customer_file_source"]) == (
        name,
        "CUSTOM",
        "USER_PROVIDED_ONLY",
    )
    assert sent[-1]["subtype"] == CustomAudience.Subtype.custom
    assert meta_sandbox.flagged_names == []  # our vendor-visible names and descriptions are neutral


def test_meta_read_back_hides_a_150_member_audience_size(adapter, meta, meta_sandbox):
    audience = seeded(adapter, 150)

    fields = meta.audience(audience)
    read = adapter.read_back(audience)

    assert fields["approximate_count_lower_bound"] == -1  # below 1,000 Meta does not show a size
    assert fields["operation_status"] == {"code": 200, "description": "Normal"}
    assert set(fields) == set(AUDIENCE_FIELDS)
    assert read == ReadBack(None, "Normal", read.note)
    assert "-1" in read.note
    gets = [(r.path, r.query["fields"]) for r in meta_sandbox.requests if r.method == "GET"]
    assert gets == [(f"/v25.0/{audience}", ",".join(AUDIENCE_FIELDS))] * 2  # ours, then the adapter's


def test_meta_read_back_reports_the_rounded_lower_bound(adapter, meta):
    audience = seeded(adapter, 5000)

    fields = meta.audience(audience)
    read = adapter.read_back(audience)

    # The Custom Audience reference's example: about 5,000 people → 4,900 to 5,100.
    assert (fields["approximate_count_lower_bound"], fields["approximate_count_upper_bound"]) == (4900, 5100)
    assert (read.matched, read.status) == (4900, "Normal")


def test_meta_read_back_of_an_unknown_audience_raises(meta):
    with pytest.raises(MetaError) as error:
        meta.audience("999")
    assert (error.value.status, error.value.code) == (400, 100)


def test_a_sensitive_name_is_created_but_flagged(adapter, meta_sandbox):
    audience = adapter.create_object("failed_payment_active", "")

    assert meta_sandbox.flagged_names == ["failed_payment_active"]
    (warning,) = meta_sandbox.warnings
    assert (warning["warning"], warning["audience_id"], warning["fields"]) == (
        "flagged_name",
        audience,
        ["name"],
    )
    assert {"payment", "failed"} <= set(warning["words"])
    read = adapter.read_back(audience)
    assert read.status != "Normal" and "471" in read.note
    # Not refused by default: membership still goes up, as the brief for the sandbox asks.
    results = adapter.client.add_users(audience, MetaAdapter.SCHEMA, hashed_rows(3), session_id=1)
    assert all(r.ok for r in results)


def test_flagged_audiences_refuse_edits_when_asked(meta):
    sandbox = MetaSandbox(access_token=TOKEN, ad_account_id=ACCOUNT, refuse_flagged_edits=True)
    with (
        httpx.Client(transport=sandbox.transport()) as http,
        MetaClient(
            graph_url="http://127.0.0.1/v25.0", access_token=TOKEN, ad_account_id=ACCOUNT, http_client=http,
            max_retries=0,
        ) as client,
    ):  # fmt: skip
        audience = client.create_audience("loan_default_watch")
        (result,) = client.add_users(audience, MetaAdapter.SCHEMA, hashed_rows(1), session_id=1)
    assert not result.ok
    assert (result.error_code, result.error_subcode) == (100, 1713230)


# --- Meta: lookalikes ------------------------------------------------------------------------------------------


def test_lookalike_refused_for_a_10_member_seed(adapter, meta_sandbox):
    seed = seeded(adapter, 10)

    with pytest.raises(MetaError) as error:
        adapter.create_lookalike(seed, default_name("lal_small"), {"country": "US", "ratio": 0.01})

    assert (error.value.status, error.value.code) == (400, 2654)
    assert "too small" in str(error.value).lower()
    assert meta_sandbox.lookalikes() == []


def test_lookalike_created_for_a_100_member_seed(adapter, meta, meta_sandbox):
    seed = seeded(adapter, 100)
    name = default_name("usage_drop_wow_lookalike")

    lookalike = adapter.create_lookalike(seed, name, {"country": "gb", "ratio": 0.03})

    (stored,) = meta_sandbox.lookalikes(origin_audience_id=seed)
    assert stored["id"] == lookalike != seed
    assert (stored["name"], stored["subtype"], stored["origin_audience_id"]) == (name, "LOOKALIKE", seed)
    assert (stored["lookalike_spec"]["country"], stored["lookalike_spec"]["ratio"]) == ("GB", 0.03)
    assert stored["lookalike_spec"]["origin"][0]["id"] == seed
    assert meta_sandbox.audience(seed)["lookalike_audience_ids"] == [lookalike]
    assert meta.audience(lookalike)["subtype"] == "LOOKALIKE"
    assert meta_sandbox.flagged_names == []


def test_a_duplicate_lookalike_is_refused(adapter):
    seed = seeded(adapter, 120)
    adapter.create_lookalike(seed, default_name("a"), {"country": "US", "ratio": 0.01})

    with pytest.raises(MetaError) as error:
        adapter.create_lookalike(seed, default_name("b"), {"country": "US", "ratio": 0.01})
    assert (error.value.code, error.value.subcode) == (2654, 1713007)
    adapter.create_lookalike(
        seed, default_name("c"), {"country": "US", "ratio": 0.02}
    )  # another size is fine


@pytest.mark.parametrize(
    ("country", "ratio"), [("US", 0.0), ("US", 0.25), ("US", 0.015), ("USA", 0.01), ("", 0.01)]
)
def test_client_refuses_specs_meta_would_refuse_before_sending(meta, meta_sandbox, country, ratio):
    with pytest.raises(ValueError):
        meta.create_lookalike("x", "23850000000000001", country=country, ratio=ratio)
    assert meta_sandbox.requests == []


@pytest.mark.parametrize(
    "spec",
    [
        {"country": "US"},  # neither type nor ratio
        {"ratio": 0.01},  # no country
        {"country": "US", "ratio": 0.3},
        {"country": "US", "type": "closest"},
        {"country": "US", "ratio": 0.02, "starting_ratio": 0.02},
        "not json",
    ],
)
def test_sandbox_refuses_malformed_lookalike_specs(adapter, meta, spec):
    seed = seeded(adapter, 100)
    body = {
        "name": "x",
        "subtype": "LOOKALIKE",
        "origin_audience_id": seed,
        "lookalike_spec": spec if isinstance(spec, str) else json.dumps(spec),
    }
    response = meta._http.post(
        f"{meta.graph_url}/act_{ACCOUNT}/customaudiences", json=body, headers=meta._headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100


def test_sandbox_accepts_the_guides_similarity_example_and_refuses_an_unknown_origin(adapter, meta):
    seed = seeded(adapter, 100)
    url, headers = f"{meta.graph_url}/act_{ACCOUNT}/customaudiences", meta._headers
    guide = {"name": "My lookalike audience", "subtype": "LOOKALIKE", "origin_audience_id": seed,
             "lookalike_spec": json.dumps({"type": "similarity", "country": "US"})}  # fmt: skip
    assert meta._http.post(url, data=guide, headers=headers).status_code == 200  # form-encoded, like the curl
    unknown = {**guide, "origin_audience_id": "777"}
    refused = meta._http.post(url, data=unknown, headers=headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, 100)


def test_lookalike_request_matches_the_sdk(adapter, sent):
    """Our body uses the SDK's CustomAudience field names and Subtype value, and every parameter type-checks
    against AdAccount.create_custom_audience (the SDK only warns on a bad type, so warnings are errors here)."""
    seed = seeded(adapter, 100)
    adapter.create_lookalike(seed, default_name("contract"), {"country": "US", "ratio": 0.01})
    body = sent[-1]

    field = CustomAudience.Field
    assert set(body) == {field.name, field.subtype, field.origin_audience_id, field.lookalike_spec}
    assert body[field.subtype] == CustomAudience.Subtype.lookalike
    assert body[field.origin_audience_id] == seed
    spec = json.loads(body[field.lookalike_spec])  # the SDK declares lookalike_spec a string: JSON text
    assert set(spec) <= set(vars(LookalikeSpec.Field).values())
    assert spec == {LookalikeSpec.Field.ratio: 0.01, LookalikeSpec.Field.country: "US"}

    api = FacebookAdsApi(FacebookSession(access_token=TOKEN))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        request = AdAccount(f"act_{ACCOUNT}", api=api).create_custom_audience(params=body, pending=True)
    assert (request._method, request._path) == ("POST", (f"act_{ACCOUNT}", "customaudiences"))
    checker = request._param_checker
    assert all(checker.is_valid_key(k) and checker.is_valid_pair(k, v) for k, v in body.items())
    assert checker.get_type(field.lookalike_spec) == "string"


# --- Customer.io: manual segment created, filled through send, read back ----------------------------------------


@pytest.fixture
def cio_sandbox():
    return CustomerIoSandbox(site_id=SITE_ID, api_key=API_KEY, app_api_key=APP_KEY)


@pytest.fixture
def cio(cio_sandbox):
    with (
        httpx.Client(transport=cio_sandbox.transport()) as http,
        CustomerIoClient(
            "http://127.0.0.1", "http://127.0.0.1", SITE_ID, API_KEY, APP_KEY, http_client=http, max_retries=0
        ) as client,
    ):
        yield client


def test_customerio_create_object_send_and_read_back(cio, cio_sandbox):
    segment = next(s for s in load_segments() if "customerio" in s.destinations)
    creator = CustomerIoAdapter(cio)
    segment_id = creator.create_object(default_name(segment.name), "Accounts whose usage fell")

    assert cio_sandbox.people() == []
    assert creator.read_back(segment_id).matched == 0
    adapter = CustomerIoAdapter(cio, section=None, objects={segment.name: segment_id})
    payloads = [{"email": f"p{i}@example.com", "tier": "gold", "reason": "usage fell"} for i in range(3)]
    changes = [Change(f"p{i}", "add", p, f"h{i}") for i, p in enumerate(payloads)]

    report = adapter.send(segment, changes, SyncContext("objects", "daily", "2026-11-19", AS_OF))

    assert all(item.ok for item in report.items)
    assert [r.operation for r in report.requests] == ["batch", "segment_add"]
    read = adapter.read_back(segment_id)
    assert read.matched == 3
    assert cio_sandbox.segment_members(int(segment_id)) == {"p0", "p1", "p2"}
    (created,) = [s for s in cio_sandbox.requests if s.method == "POST" and s.path == "/v1/segments"]
    assert created.status == 200


def test_customerio_removal_is_read_back(cio, cio_sandbox):
    segment = next(s for s in load_segments() if "customerio" in s.destinations)
    segment_id = CustomerIoAdapter(cio).create_object(default_name(segment.name), "")
    adapter = CustomerIoAdapter(cio, objects={segment.name: segment_id})
    context = SyncContext("objects", "daily", "2026-11-19", AS_OF)
    adds = [Change(f"p{i}", "add", {"tier": "gold"}, f"h{i}") for i in range(3)]
    adapter.send(segment, adds, context)

    adapter.send(segment, [Change("p1", "remove", {}, "r1", previous_payload={"tier": "gold"})], context)

    assert adapter.read_back(segment_id).matched == 2


def test_customerio_read_back_of_an_unknown_segment_raises(cio):
    with pytest.raises(CustomerIoError, match="404"):
        CustomerIoAdapter(cio).read_back("4242")
