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
]  # fmt: skip
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
        "meta_phone('+15559876543'), sha256(meta_phone('+15559876543')), google_phone('+15559876543')"
    ).fetchone()
    assert row == (MARY, DANA, "15559876543", META_PHONE, "+15559876543")


@pytest.mark.parametrize("value", TRICKY_EMAILS)
def test_email_python_equals_sql(con, value):
    sql = con.execute("SELECT norm_email($v), email_sha256($v)", {"v": value}).fetchone()
    assert sql == (identity.normalize_email(value), identity.email_sha256(value))


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
