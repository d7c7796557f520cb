"""Our Meta hashes and `/{audience_id}/users` bodies against Meta's own Python SDK (facebook-business).

What the SDK does, read from its source (adobjects/helpers/customaudiencemixin.py, `format_params` with a multi-key
schema and `is_raw=True`): every value is `strip(" \\t\\r\\n\\0\\x0B.")`-ed and `str.lower()`-ed, PHONE then loses
every non-digit (`normalize_key`), EMAIL gets nothing more, and each value is SHA-256 hex. The result is
`{"payload": {"schema", "is_raw": True, "data"}}` plus `session` exactly as the caller built it (the SDK has no
session builder, so session fields are checked against Meta's reference in test_meta, not here).

Where we differ on purpose, the tests pin the difference and assert the part that must agree:
- phone: the SDK infers no country and keeps trunk and international-prefix zeros, so "(415) 555-0132" hashes
  without its country code and "0044 …" with its zeros (Meta's own rule says to drop leading zeros and add the
  country code). We parse to E.164 first. Must agree: for numbers written with '+' and the country code the
  hashes are equal, and for every number the SDK's PHONE rule applied to our E.164 gives our hash.
- email: we also trim NBSP/BOM, send nothing for a non-address (the SDK hashes anything), keep dots at the ends
  (Meta's rule trims only whitespace) and lowercase per character like DuckDB (final sigma stays σ).
- a missing key: we send "" where the SDK hashes "" into sha256(""), a hash of nothing.
- `is_raw`: the SDK adds it; Meta's /users reference example sends only schema and data, and our rows are hashes.
No network: `format_params` is pure, SDK requests are built with `pending=True` and never executed, and our
client talks to the Meta sandbox through an in-process transport.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime

import duckdb
import httpx
import pytest
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.api import FacebookAdsApi
from facebook_business.session import FacebookSession

from retention_pipeline.destinations import identity
from retention_pipeline.destinations.meta.adapter import MetaAdapter
from retention_pipeline.destinations.meta.client import MetaClient
from retention_pipeline.destinations.routing import Routing
from retention_pipeline.destinations.sync import Change, SyncContext
from retention_pipeline.sandbox.meta import MetaSandbox
from retention_pipeline.segments.project import load_segments

TOKEN, ACCOUNT = "meta-contract-token", "1234567890"
SCHEMA = ["EMAIL", "PHONE"]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

SAME_EMAILS = [
    "Mary@Example.com", "  MARY@EXAMPLE.COM\t", "\nFirst.Last+Promo@GMail.com\r\n", "o'brien@Example.IE",
    "ÄNNE@EXAMPLE.DE", "user.name+NYC@Example.com",
]  # fmt: skip
# raw → what we hash (None: nothing is sent); the SDK hashes the raw value after its own strip/lower.
DIFFERENT_EMAILS = [
    ("\ufeffdana@example.com\u00a0", "dana@example.com"),
    (".mary@example.com", ".mary@example.com"),
    ("mary@example.com.", "mary@example.com."),
    ("not-an-email", None),
    ("ΣΑΣ@example.gr", "σασ@example.gr"),
]
# (raw, default region, written with '+' and the country code and no trunk zero)
PHONES = [
    ("+1 (415) 555-0132", "US", True), ("+1-415-555-0132", "US", True), ("+44 20 7946 0958", "US", True),
    ("+49 30 1234567", "DE", True), ("+81 3-1234-5678", "JP", True), ("+353 1 234 5678", "IE", True),
    ("+61 2 9876 5432", "AU", True), ("+91 98765 43210", "IN", True),
    ("(415) 555-0132", "US", False), ("415.555.0132", "US", False), ("+44 (0)20 7946 0958", "GB", False),
    ("0044 20 7946 0958", "GB", False), ("030 1234567", "DE", False),
]  # fmt: skip


def sdk_hash(key: str, raw: str) -> str:
    return CustomAudience.format_params([key], [[raw]], is_raw=True)["payload"]["data"][0][0]


def engine_payload(con: duckdb.DuckDBPyConnection, email: str, phone: str) -> dict:
    """A Meta member's payload as sync.DESIRED_SQL builds it from the macros ('' for a missing identifier)."""
    row = con.execute(
        "SELECT coalesce(email_sha256($e), ''), coalesce(meta_phone_sha256($p), '')",
        {"e": email, "p": identity.phone_e164(phone)},
    ).fetchone()
    return dict(zip(SCHEMA, row, strict=True))


@pytest.mark.parametrize("raw", SAME_EMAILS)
def test_email_hash_equals_the_sdk(con, raw):
    ours = con.execute("SELECT email_sha256($v)", {"v": raw}).fetchone()[0]
    assert ours == sdk_hash("EMAIL", raw)


@pytest.mark.parametrize(("raw", "ours_normalized"), DIFFERENT_EMAILS)
def test_email_differences_from_the_sdk_are_the_documented_ones(con, raw, ours_normalized):
    ours = con.execute("SELECT email_sha256($v)", {"v": raw}).fetchone()[0]
    assert ours == identity.sha256_hex(ours_normalized)
    assert ours != sdk_hash("EMAIL", raw)


@pytest.mark.parametrize(("raw", "region", "international"), PHONES)
def test_phone_hash_agrees_with_the_sdk_on_e164(con, raw, region, international):
    e164 = identity.phone_e164(raw, region)  # what the contacts loader stores in phone_e164
    assert e164 is not None
    ours = con.execute("SELECT meta_phone_sha256($v)", {"v": e164}).fetchone()[0]
    assert ours == sdk_hash("PHONE", e164)
    # The SDK on the number as written: equal only when the writer already gave the full international number.
    assert (sdk_hash("PHONE", raw) == ours) is international


@pytest.fixture
def sent():
    """The Meta sandbox behind an in-process transport that keeps every request body our client sends."""
    sandbox, bodies = MetaSandbox(access_token=TOKEN, ad_account_id=ACCOUNT), []

    def record(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/users"):
            bodies.append((request.method, request.url.path, json.loads(request.content)))
        return sandbox.handle(request)

    with (
        httpx.Client(transport=httpx.MockTransport(record)) as http,
        MetaClient(
            graph_url="http://127.0.0.1/v25.0", access_token=TOKEN, ad_account_id=ACCOUNT, http_client=http
        ) as client,
    ):
        yield client, sandbox, bodies


def test_users_bodies_match_format_params(con, sent):
    client, sandbox, bodies = sent
    segment = next(s for s in load_segments() if "meta" in s.destinations)
    audience = client.create_audience(segment.name)
    routing = Routing(sections={"meta": {"audiences": {segment.name: audience}}})
    adapter = MetaAdapter(client, routing.section("meta"), routing.objects("meta"))
    raw = [
        ["Mary@Example.com ", "+1 (415) 555-0132"],
        ["First.Last+Promo@GMail.com", "+44 20 7946 0958"],
        ["dana@example.com", ""],
        ["", "+49 30 1234567"],
    ]
    payloads = [engine_payload(con, email, phone) for email, phone in raw]
    changes = [Change(f"p{i}", "add", p, f"h{i}") for i, p in enumerate(payloads)]
    context = SyncContext("contract", "daily", "2026-11-19", datetime(2026, 11, 20))
    adapter.send(segment, changes, context)
    assert len(sandbox.member_rows(audience)) == len(raw)
    adapter.send(
        segment, [Change(c.member_key, "remove", c.payload, c.payload_hash) for c in changes], context
    )

    api = FacebookAdsApi(FacebookSession(access_token=TOKEN))
    edge = {
        "POST": CustomAudience(audience, api=api).create_user,
        "DELETE": CustomAudience(audience, api=api).delete_users,
    }
    assert [method for method, _, _ in bodies] == ["POST", "DELETE"]
    for method, path, body in bodies:
        sdk = CustomAudience.format_params(SCHEMA, raw, is_raw=True, session=body["session"])
        assert path == f"/v25.0/{audience}/users"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the SDK's parameter type checker only warns
            request = edge[method](params=body, pending=True)
        # FacebookRequest keeps the edge's method, path and declared parameters in private attributes only.
        assert (request._method, request._path) == (method, (audience, "users"))
        assert all(request._param_checker.is_valid_key(key) for key in body)
        assert body.keys() == sdk.keys()
        assert body["payload"]["schema"] == sdk["payload"]["schema"] == SCHEMA
        assert set(sdk["payload"]) - set(body["payload"]) == {"is_raw"}
        ours, theirs = body["payload"]["data"], sdk["payload"]["data"]
        assert ours[:2] == theirs[:2]  # both identifiers present
        assert (ours[2][0], ours[3][1]) == (theirs[2][0], theirs[3][1])
        assert (ours[2][1], ours[3][0]) == ("", "")
        assert (theirs[2][1], theirs[3][0]) == (EMPTY_SHA256, EMPTY_SHA256)
    assert sandbox.member_rows(audience) == []  # the removes took out what the adds put in
