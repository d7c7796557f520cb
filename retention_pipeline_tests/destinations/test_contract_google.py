"""Our Google hashes and Data Manager request bodies against Google's own Python packages.

- `google-ads-datamanager-util` (googleads/data-manager-python) ships `Formatter`, Google's reference for the
  "Format user data" guide (https://developers.google.com/data-manager/api/devguides/concepts/formatting). Read from
  its source: email is stripped, refused if blank, with inner whitespace or not one '@', lowercased with
  `str.lower()`, and for gmail.com / googlemail.com loses its +tag and then its dots; phone keeps only its digits
  behind a '+'; hashes are SHA-256 hex. `ValueError` is its "no value", our None.
- `google-ads-datamanager` is the generated API surface: its proto-plus types parse JSON with unknown fields and
  unknown enum values refused, so our request bodies must parse as IngestAudienceMembersRequest /
  RemoveAudienceMembersRequest.

Where we differ on purpose, the tests pin it: we refuse a domain without a dot ("a@b"), trim a BOM, and lowercase
per character like DuckDB (σ, İ → i); the Formatter infers no country code and keeps trunk and international-
prefix zeros, so "(415) 555-0132" would become "+4155550132". We parse to E.164 first, and our E.164 is a fixed
point of its phone rule. No network: the Formatter is pure and our client talks to the Google sandbox through an
in-process transport.
"""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import httpx
import pytest
from google.ads.datamanager_util import Encoding, Formatter
from google.ads.datamanager_v1 import types as dm
from google.protobuf.json_format import ParseError

from retention_pipeline.destinations import identity
from retention_pipeline.destinations.google.adapter import GoogleAdapter
from retention_pipeline.destinations.google.client import GoogleDataManagerClient
from retention_pipeline.destinations.routing import Routing
from retention_pipeline.destinations.sync import Change, SyncContext
from retention_pipeline.sandbox.google import GoogleDataManagerSandbox
from retention_pipeline.segments.project import load_segments

TOKEN, LIST_ID = "ya29.contract-token", "5550001"
FORMATTER = Formatter()

SAME_EMAILS = [
    "cloudy.sanfrancisco+shopping@gmail.com", "user.name+NYC@Example.com",  # the guide's examples
    "Mary@Example.com", "  MARY@EXAMPLE.COM\t", "\u00a0dana@example.com\u00a0", "F.I.R.S.T.Last@GMAIL.COM",
    "first.last+promo+more@GoogleMail.com", "first.last+promo@gmail.com.evil.io", "first.last+promo@mail.gmail.com",
    "x@y.z ", "ÄNNE@EXAMPLE.DE",
]  # fmt: skip
BOTH_REFUSE = ["", "   ", "a b@c.com", "a@@b.com", "@example.com", "+promo@gmail.com", "..@gmail.com"]
# raw → what we normalize it to (None: nothing is sent); the Formatter answers otherwise.
DIFFERENT_EMAILS = [
    ("a@b", None),
    ("\ufeffdana@example.com", "dana@example.com"),
    ("ΣΑΣ@example.gr", "σασ@example.gr"),
    ("x@GMAİL.COM", "x@gmail.com"),
]
# (raw, default region, written with '+' and the country code and no trunk zero)
PHONES = [
    ("+1 (415) 555-0132", "US", True), ("+44 20 7946 0958", "US", True), ("+49 30 1234567", "DE", True),
    ("+81 3-1234-5678", "JP", True), ("+91 98765 43210", "IN", True),
    ("(800)555-0100", "US", False), ("(415) 555-0132", "US", False), ("+44 (0)20 7946 0958", "GB", False),
    ("0044 20 7946 0958", "GB", False), ("030 1234567", "DE", False),
]  # fmt: skip


def formatted_email(raw: str) -> str | None:
    try:
        return FORMATTER.format_email_address(raw)
    except ValueError:
        return None


def engine_payload(con: duckdb.DuckDBPyConnection, email: str, phone: str) -> dict:
    """A Google member's payload as sync.DESIRED_SQL should build it from the macros (None for a missing one)."""
    row = con.execute(
        "SELECT google_email_sha256($e), google_phone_sha256($p)",
        {"e": email, "p": identity.phone_e164(phone)},
    ).fetchone()
    return dict(zip(("emailAddress", "phoneNumber"), row, strict=True))


@pytest.mark.parametrize("raw", SAME_EMAILS)
def test_email_equals_googles_formatter(con, raw):
    ours = con.execute("SELECT google_email($v), google_email_sha256($v)", {"v": raw}).fetchone()
    assert ours == (FORMATTER.format_email_address(raw), FORMATTER.process_email_address(raw, Encoding.HEX))


@pytest.mark.parametrize("raw", BOTH_REFUSE)
def test_email_refused_by_both(con, raw):
    assert con.execute("SELECT google_email_sha256($v)", {"v": raw}).fetchone()[0] is None
    with pytest.raises(ValueError):
        FORMATTER.format_email_address(raw)


@pytest.mark.parametrize(("raw", "ours_normalized"), DIFFERENT_EMAILS)
def test_email_differences_from_the_formatter_are_the_documented_ones(con, raw, ours_normalized):
    assert con.execute("SELECT google_email($v)", {"v": raw}).fetchone()[0] == ours_normalized
    assert formatted_email(raw) not in (None, ours_normalized)


def test_the_guides_phone_example():
    assert identity.google_phone(identity.phone_e164("(800)555-0100")) == "+18005550100"


@pytest.mark.parametrize(("raw", "region", "international"), PHONES)
def test_phone_agrees_with_googles_formatter_on_e164(con, raw, region, international):
    e164 = identity.phone_e164(raw, region)  # what the contacts loader stores in phone_e164
    ours = con.execute("SELECT google_phone($v), google_phone_sha256($v)", {"v": e164}).fetchone()
    assert ours == (FORMATTER.format_phone_number(e164), FORMATTER.process_phone_number(e164, Encoding.HEX))
    # The Formatter on the number as written: right only when the writer gave the full international number.
    assert (FORMATTER.format_phone_number(raw) == ours[0]) is international


@pytest.fixture
def sent():
    """The Google sandbox behind an in-process transport that keeps every request body our client sends."""
    sandbox, bodies = GoogleDataManagerSandbox(access_token=TOKEN), []

    def record(request: httpx.Request) -> httpx.Response:
        bodies.append((request.url.path, request.content.decode()))
        return sandbox.handle(request)

    with (
        httpx.Client(transport=httpx.MockTransport(record)) as http,
        GoogleDataManagerClient(url="http://127.0.0.1", access_token=TOKEN, http_client=http) as client,
    ):
        yield client, sandbox, bodies


def test_request_bodies_parse_as_the_official_request_types(con, sent):
    client, sandbox, bodies = sent
    segment = next(s for s in load_segments() if "google" in s.destinations)
    routing = Routing(
        sections={
            "google": {
                "operating_account": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                "user_lists": {segment.name: LIST_ID},
            }
        }
    )
    raw = [("First.Last+Promo@GMail.com", "+1 (415) 555-0132"), ("dana@example.com", "")]
    payloads = [engine_payload(con, email, phone) for email, phone in raw]
    changes = [Change(f"p{i}", "add", p, f"h{i}") for i, p in enumerate(payloads)]
    context = SyncContext("contract", "daily", "2026-11-19", datetime(2026, 11, 20))
    adapter = GoogleAdapter(client, routing.section("google"), routing.objects("google"))
    adapter.send(segment, changes, context)
    assert sandbox.member_count(LIST_ID) == len(raw)
    adapter.send(
        segment, [Change(c.member_key, "remove", c.payload, c.payload_hash) for c in changes], context
    )

    assert [path for path, _ in bodies] == ["/v1/audienceMembers:ingest", "/v1/audienceMembers:remove"]
    ingest = dm.IngestAudienceMembersRequest.from_json(bodies[0][1])
    remove = dm.RemoveAudienceMembersRequest.from_json(bodies[1][1])
    assert ingest.encoding == remove.encoding == dm.Encoding.HEX
    assert ingest.terms_of_service.customer_match_terms_of_service_status == dm.TermsOfServiceStatus.ACCEPTED
    assert {(m.consent.ad_user_data, m.consent.ad_personalization) for m in ingest.audience_members} == {
        (dm.ConsentStatus.CONSENT_GRANTED, dm.ConsentStatus.CONSENT_GRANTED)
    }
    assert [d.product_destination_id for d in ingest.destinations] == [LIST_ID]
    expected = [
        [FORMATTER.process_email_address(email, Encoding.HEX)]
        + ([FORMATTER.process_phone_number(identity.phone_e164(phone), Encoding.HEX)] if phone else [])
        for email, phone in raw
    ]
    for request in (ingest, remove):
        identifiers = [
            [i.email_address or i.phone_number for i in m.user_data.user_identifiers]
            for m in request.audience_members
        ]
        assert identifiers == expected
    assert sandbox.member_count(LIST_ID) == 0  # the remove took out what the ingest put in


def test_the_request_types_refuse_a_bare_granted():
    """The parse above can fail: `GRANTED` is the Google Ads API's enum, not Data Manager's."""
    body = {"audienceMembers": [{"consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}}]}
    with pytest.raises(ParseError, match="GRANTED"):
        dm.IngestAudienceMembersRequest.from_json(json.dumps(body))
