"""Normalization and hashing: the vendors' test vectors, and the Python and DuckDB versions agreeing."""

from __future__ import annotations

import duckdb
import pytest

from retention_pipeline.destinations import identity
from retention_pipeline.source.contacts import to_e164

MARY = "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
META_PHONE = "1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e"
DANA = "07e2f1394b0ea80e2adca010ea8318df697001a005ba7452720edda4b0ce57b3"

TRICKY_EMAILS = [
    None, "", " ", "\n", "Mary@Example.com", "  MARY@EXAMPLE.COM\t", "\ufeffdana@example.com\u00a0",
    "first.last+tag@gmail.com", "a b@c.com", "a@b", "a@@b.com", "@example.com", "x@y.z ",
    "ÄNNE@EXAMPLE.DE", "ΣΑΣ@example.gr", "İSTANBUL@example.tr",
    " Cloudy.SanFrancisco+Shopping@GMail.com ", "j.o.h.n@googlemail.com", "+tag@gmail.com", "...@gmail.com",
    "a.b+c@gmail.com.evil.io", "a.b+c@mail.gmail.com", "a+b+c@gmail.com", "x@GMAİL.COM",
]  # fmt: skip
# The Data Manager guide's own examples (https://developers.google.com/data-manager/api/devguides/concepts/formatting).
DM_GUIDE_EMAILS = [
    ("cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com"),
    ("user.name+NYC@Example.com", "user.name+nyc@example.com"),
]
TRICKY_E164 = [
    None, "", "+15559876543", " +15559876543\n", "15559876543", "+015559876543", "+1555", "+1234567890123456",
    "+123456789012345", "+1 555 987 6543", "+١٢٣٤٥٦٧٨", "+4930123456",
]  # fmt: skip


def test_vendor_test_vectors():
    assert identity.email_sha256("  Mary@Example.com ") == MARY
    assert identity.email_sha256("dana@example.com") == DANA
    assert identity.meta_phone("+15559876543") == "15559876543"
    assert identity.meta_phone_sha256("+15559876543") == META_PHONE
    assert identity.google_phone("+15559876543") == "+15559876543"
    assert identity.google_phone_sha256("+15559876543") == identity.sha256_hex("+15559876543")


def test_email_keeps_dots_and_tags_and_rejects_non_addresses():
    assert identity.normalize_email("First.Last+Promo@GMail.com") == "first.last+promo@gmail.com"
    for bad in (None, "", "   ", "no-at-sign", "a b@c.com", "a@b"):
        assert identity.normalize_email(bad) is None
        assert identity.email_sha256(bad) is None


@pytest.mark.parametrize(("raw", "expected"), DM_GUIDE_EMAILS)
def test_google_email_follows_the_data_manager_guide_examples(raw, expected):
    assert identity.google_email(raw) == expected
    assert identity.google_email_sha256(raw) == identity.sha256_hex(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("First.Last@gmail.com", "firstlast@gmail.com"),
        ("  F.I.R.S.T.Last@GMAIL.COM\t", "firstlast@gmail.com"),
        ("first.last+promo@gmail.com", "firstlast@gmail.com"),
        ("First.Last+promo+more@GoogleMail.com", "firstlast@googlemail.com"),  # not mapped to gmail.com
        ("first.last+promo@example.com", "first.last+promo@example.com"),  # other domains keep dots and tags
        ("first.last+promo@gmail.com.evil.io", "first.last+promo@gmail.com.evil.io"),
        ("first.last+promo@mail.gmail.com", "first.last+promo@mail.gmail.com"),
        ("+promo@gmail.com", None),  # nothing left of the address
        ("..@gmail.com", None),
        ("not-an-email", None),
        (None, None),
    ],
)
def test_google_email_gmail_cases(raw, expected):
    assert identity.google_email(raw) == expected


def test_only_google_drops_gmail_dots_and_tags():
    raw = "First.Last+Promo@GMail.com"
    # Meta and Customer.io hash `norm_email`: Meta's rule has no Gmail case.
    assert identity.email_sha256(raw) == identity.sha256_hex("first.last+promo@gmail.com")
    assert identity.google_email_sha256(raw) == identity.sha256_hex("firstlast@gmail.com")
    assert identity.google_email_sha256("firstlast@gmail.com") == identity.google_email_sha256(raw)


def test_phone_to_e164_matches_the_contacts_loader():
    for raw, region in [("(415) 555-0132", "US"), ("+44 20 7946 0958", "US"), ("030 1234567", "de"),
                        ("+1 555 987 6543", "US"), ("12", "US"), ("", "US"), ("not a phone", "US")]:  # fmt: skip
        expected = to_e164(raw, region.upper()) if raw else None
        assert identity.phone_e164(raw, region) == expected
    assert identity.phone_e164("(415) 555-0132") == "+14155550132"
    assert identity.meta_phone(identity.phone_e164("(415) 555-0132")) == "14155550132"


def test_sha256_hex_shape():
    assert identity.is_sha256_hex(MARY)
    assert not identity.is_sha256_hex(MARY.upper())
    assert not identity.is_sha256_hex(MARY[:-1])
    assert not identity.is_sha256_hex("mary@example.com")
    assert not identity.is_sha256_hex(None)


@pytest.fixture
def con():
    with duckdb.connect() as connection:
        connection.execute(identity.IDENTITY_MACROS_SQL)
        yield connection


def test_sql_macros_hit_the_vectors(con):
    row = con.execute(
        "SELECT email_sha256('Mary@Example.com '), sha256(norm_email('dana@example.com')), "
        "meta_phone('+15559876543'), sha256(meta_phone('+15559876543')), google_phone('+15559876543'), "
        "google_email_sha256('Mary@Example.com '), google_email('cloudy.sanfrancisco+shopping@gmail.com')"
    ).fetchone()
    gmail = "cloudysanfrancisco@gmail.com"
    assert row == (MARY, DANA, "15559876543", META_PHONE, "+15559876543", MARY, gmail)


@pytest.mark.parametrize("value", TRICKY_EMAILS)
def test_email_python_equals_sql(con, value):
    sql = con.execute(
        "SELECT norm_email($v), email_sha256($v), google_email($v), google_email_sha256($v)", {"v": value}
    ).fetchone()
    python = (
        identity.normalize_email(value),
        identity.email_sha256(value),
        identity.google_email(value),
        identity.google_email_sha256(value),
    )
    assert sql == python


@pytest.mark.parametrize("value", TRICKY_E164)
def test_phone_python_equals_sql(con, value):
    sql = con.execute(
        "SELECT meta_phone($v), google_phone($v), meta_phone_sha256($v), google_phone_sha256($v)",
        {"v": value},
    ).fetchone()
    python = (
        identity.meta_phone(value),
        identity.google_phone(value),
        identity.meta_phone_sha256(value),
        identity.google_phone_sha256(value),
    )
    assert sql == python


def test_macros_hash_a_whole_column(con):
    con.execute(
        "CREATE TEMP TABLE people AS SELECT * FROM (VALUES ('Mary@Example.com'), (NULL), ('bad')) t(email)"
    )
    hashes = [h for (h,) in con.execute("SELECT email_sha256(email) FROM people ORDER BY rowid").fetchall()]
    assert hashes == [MARY, None, None]
