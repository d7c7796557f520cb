"""Identifier normalization and SHA-256 hashing, once in Python (single values) and once as DuckDB macros (columns).

Both versions must agree byte for byte, or the engine's columnar hashes and the clients' single-value hashes would
disagree about the same person. The rules follow the vendors' Custom Audience / Data Manager docs:

- email (Meta, Customer.io): trim, lowercase; dots and +tags kept (Meta's rule has no Gmail case);
- email (Google): the same, then for gmail.com / googlemail.com only, the +tag and the dots of the local part go;
- phone: E.164 via `phonenumbers` first; Meta hashes the digits without '+', Google hashes E.164 with '+'.

Lowercasing uses the per-character (simple) Unicode mapping, which is what DuckDB's `lower()` does; Python's
`str.lower()` differs on the final sigma and U+0130. NULL, empty and invalid values normalize to NULL/None.
"""

from __future__ import annotations

import hashlib
import re

import phonenumbers

# Trimmed around values; inside an email any of them makes it invalid. NBSP and BOM come from copy-paste and CSVs.
_WHITESPACE = (0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0xA0, 0xFEFF)
_WS_CHARS = "".join(map(chr, _WHITESPACE))
_WS_RE2 = "".join(f"\\x{{{c:x}}}" for c in _WHITESPACE)
_WS_PY = "".join(f"\\u{c:04x}" for c in _WHITESPACE)
# Deliberately simple (one @, a dot in the domain): deliverability is the vendor's problem, not the hash's.
_EMAIL_TEMPLATE = "[^@{ws}]+@[^@{ws}]+\\.[^@{ws}]+"
_EMAIL_PY = re.compile(_EMAIL_TEMPLATE.format(ws=_WS_PY))
_EMAIL_SQL = _EMAIL_TEMPLATE.format(ws=_WS_RE2)
# E.164: '+', no leading zero, 7-15 digits in all. ASCII digits only (Python's \d also matches other scripts).
_E164 = r"\+[1-9][0-9]{6,14}"
_E164_PY = re.compile(_E164)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _lower(value: str) -> str:
    if value.isascii():
        return value.lower()
    return "".join(c.lower()[0] for c in value)


def normalize_email(value: str | None) -> str | None:
    """Trimmed and lowercased; None when empty or not shaped like an address."""
    if value is None:
        return None
    email = _lower(value.strip(_WS_CHARS))
    return email if _EMAIL_PY.fullmatch(email) else None


# Google Data Manager, "Format user data", email_address
# (https://developers.google.com/data-manager/api/devguides/concepts/formatting): "Convert to lowercase." and "If
# the email address has the gmail.com or googlemail.com domain, remove all dots (.) before the @ symbol." The
# current page also removes, for those two domains only, the plus sign (+) of the local part and every character
# after it (its example: cloudy.sanfrancisco+shopping@gmail.com → cloudysanfrancisco@gmail.com), and keeps dots and
# plus signs on every other domain (user.name+NYC@Example.com → user.name+nyc@example.com). Google's own
# `google-ads-datamanager-util` (Formatter.format_email_address) does the same; test_contract_google holds us to
# it. googlemail.com stays googlemail.com: neither the guide nor the Formatter maps it to gmail.com.
GMAIL_DOMAINS = ("gmail.com", "googlemail.com")


def google_email(value: str | None) -> str | None:
    """`normalize_email`, then Gmail's +tag and dots dropped; None when nothing is left of the local part."""
    email = normalize_email(value)
    if email is None:
        return None
    local, domain = email.split("@")
    if domain not in GMAIL_DOMAINS:
        return email
    local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@{domain}" if local else None


def phone_e164(value: str | None, default_region: str = "US") -> str | None:
    """A phone number as written by a person → E.164 ('+' and digits); None when empty or not a valid number.

    The same rule as `source.contacts.to_e164` (which fills `phone_e164`), kept here without its pandas and
    dagster imports so the sandboxes and the CLI start fast; a test holds the two together.
    """
    if value is None or not value.strip(_WS_CHARS):
        return None
    try:
        number = phonenumbers.parse(value.strip(_WS_CHARS), default_region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _e164(value: str | None) -> str | None:
    if value is None:
        return None
    phone = value.strip(_WS_CHARS)
    return phone if _E164_PY.fullmatch(phone) else None


# Meta's EMAIL and PHONE keys (https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences,
# "Hashing and Normalizing Data"): email "Trim leading and trailing white space and convert all characters to
# lowercase"; phone "Remove symbols, letters, and any leading zeroes. You should prefix the country code if COUNTRY
# field is not specified." No Gmail case, so Meta hashes `normalize_email`.
def meta_phone(e164: str | None) -> str | None:
    """Meta's PHONE key: the E.164 digits without '+' (E.164 never has leading zeros)."""
    phone = _e164(e164)
    return phone[1:] if phone else None


# Google's phone_number (same page as the email rule above): "Include the plus sign (+) and the country code. All
# characters after the plus sign must be digits. For example, the US phone number (800)555-0100 should be formatted
# and normalized to +18005550100."
def google_phone(e164: str | None) -> str | None:
    """Google's phoneNumber: E.164 with the leading '+'."""
    return _e164(e164)


def sha256_hex(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def is_sha256_hex(value: object) -> bool:
    """True for 64 lowercase hex characters: the only identifier shape the clients let leave the process."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def email_sha256(value: str | None) -> str | None:
    return sha256_hex(normalize_email(value))


def google_email_sha256(value: str | None) -> str | None:
    return sha256_hex(google_email(value))


def meta_phone_sha256(e164: str | None) -> str | None:
    return sha256_hex(meta_phone(e164))


def google_phone_sha256(e164: str | None) -> str | None:
    return sha256_hex(google_phone(e164))


def _sql_chars(codes: tuple[int, ...]) -> str:
    return " || ".join(f"chr({c})" for c in codes)


IDENTITY_MACROS_SQL = f"""
CREATE OR REPLACE TEMP MACRO norm_email(x) AS (
    CASE WHEN regexp_full_match(lower(trim(x, {_sql_chars(_WHITESPACE)})), '{_EMAIL_SQL}')
         THEN lower(trim(x, {_sql_chars(_WHITESPACE)})) END
);
CREATE OR REPLACE TEMP MACRO google_phone(e164) AS (
    CASE WHEN regexp_full_match(trim(e164, {_sql_chars(_WHITESPACE)}), '{_E164}')
         THEN trim(e164, {_sql_chars(_WHITESPACE)}) END
);
CREATE OR REPLACE TEMP MACRO meta_phone(e164) AS (substr(google_phone(e164), 2));
CREATE OR REPLACE TEMP MACRO google_email(x) AS (
    CASE WHEN split_part(norm_email(x), '@', 2) IN {GMAIL_DOMAINS}
         THEN nullif(replace(split_part(split_part(norm_email(x), '@', 1), '+', 1), '.', ''), '')
              || '@' || split_part(norm_email(x), '@', 2)
         ELSE norm_email(x) END
);
CREATE OR REPLACE TEMP MACRO email_sha256(x) AS (sha256(norm_email(x)));
CREATE OR REPLACE TEMP MACRO google_email_sha256(x) AS (sha256(google_email(x)));
CREATE OR REPLACE TEMP MACRO meta_phone_sha256(e164) AS (sha256(meta_phone(e164)));
CREATE OR REPLACE TEMP MACRO google_phone_sha256(e164) AS (sha256(google_phone(e164)));
-- The same rules by what they do, for destinations that share them (TikTok: E.164 with '+').
CREATE OR REPLACE TEMP MACRO e164_phone(e164) AS (google_phone(e164));
CREATE OR REPLACE TEMP MACRO e164_phone_sha256(e164) AS (sha256(google_phone(e164)));
"""
"""Temp macros (per connection): run `connection.execute(IDENTITY_MACROS_SQL)` before hashing columns."""
