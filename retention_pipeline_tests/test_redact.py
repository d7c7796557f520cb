"""Redaction of text we do not write ourselves: what must be masked, and what must survive untouched."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from retention_pipeline.redact import redact, redact_pii, redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("invalid email jane.doe+tag@example.co.uk", "invalid email <email>"),
        ('{"email":"Jane@Example.COM","ok":false}', '{"email":"<email>","ok":false}'),
        ("'o'brien@example.ie' refused", "<email>' refused"),
        ("用户@例子.广告 and a@b.co.", "<email> and <email>."),
        ("/v1/customers/jane@example.com/x", "/v1/customers/<email>/x"),
        ('=HYPERLINK("x")=1+jane@example.com', '=HYPERLINK("x")<email>'),  # atext is masked whole
    ],
)
def test_emails_are_masked(text, expected):
    assert redact_pii(text) == expected


@pytest.mark.parametrize(
    "phone",
    ["+14155552671", "+1 415 555 2671", "(415) 555-2671", "415-555-2671", "415.555.2671", "+44 20 7946 0958",
     "+33 6 12 34 56 78", "06 12 34 56 78"],
)  # fmt: skip
def test_phones_are_masked(phone):
    assert redact_pii(f"phone {phone} is not valid") == "phone <phone> is not valid"
    assert redact_pii(f'{{"phone":"{phone}"}}') == '{"phone":"<phone>"}'
    assert redact_pii(f"phone:{phone}") == "phone:<phone>"


def test_a_phone_next_to_another_number_is_still_masked():
    assert redact_pii("415-555-2671 01.12.2026") == "<phone> 01.12.2026"
    assert redact_pii("2026-11-20 +1 415 555 2671 2026-11-21") == "2026-11-20 <phone> 2026-11-21"


SURVIVORS = [
    hashlib.sha256(b"jane@example.com").hexdigest(),
    "0123456789" + hashlib.sha256(b"x").hexdigest()[10:],  # a digest that starts with a digit run
    str(uuid.UUID("09f7f176-c37c-53c5-98c6-a6a12d3c8097")),
    "12345678-1234-1234-1234-123456789012",  # a UUID of digits only
    "2026-11-20T10:30:00Z",
    "2026-11-20T10:30:00.123456+00:00",
    "2026-11-20 10:30:00",
    "2026-11-10T00:00:00Z..2026-11-20T00:00:00Z",
    "usage DAY 2026-11-01..2026-12-01: 1,234,567 rows",
    "HTTP 429",
    "HTTP 503 after 6 attempts",
    "retried on 429, 500, 502, 503 and 504",
    "Retry-After 3600s exceeds the 30s cap",
    "act_1234567890 audience 23851234567890123 subcode 1870159 at 1733212800",
    "balance 12345.67 of -1234567.5",
    "127.0.0.1:8080 and 192.168.100.200",
    "dagster 1.13.27, metronome-sdk 3.1.0",
    "cursor eyJvZmZzZXQiOjEwMH0= repeated",
]


@pytest.mark.parametrize("text", SURVIVORS)
def test_ids_hashes_timestamps_and_statuses_survive(text):
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pass@api.example.com/v1", "https://api.example.com/v1"),
        ("METRONOME_API_URL='https://u:s3cr3t@host:8443' is not reachable", "METRONOME_API_URL='https://host:8443' is not reachable"),
        ("http://token@127.0.0.1:9/x?y=1#z", "http://127.0.0.1:9/x?y=1#z"),
        ("https://user:p@ss@host.example/", "https://host.example/"),  # a raw @ in the password
        ("postgres://u:pw@db/x and HTTPS://A:B@C.example", "postgres://db/x and HTTPS://C.example"),
        ("https://api.example.com/users/a@b.example?x=a@b", "https://api.example.com/users/a@b.example?x=a@b"),
    ],
)  # fmt: skip
def test_url_userinfo_is_dropped_anywhere_in_a_message(text, expected):
    assert redact_url(text) == expected


def test_redact_removes_credentials_before_looking_for_addresses():
    assert redact("at https://svc:hunter2@api.example.com by ops@example.com") == (
        "at https://api.example.com by <email>"
    )
