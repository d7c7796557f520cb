"""Scans, run last: secrets and raw contact PII in everything captured, raw PII in what the ad destinations received.

Secrets are the distinctive values the suite set (tokens, keys, the webhook secret, Customer.io's Basic credential).
PII is the tenant's contacts CSV: every email (as given and normalized) and every phone with at least 10 digits (as
digits, which covers the national, international and E.164 spellings). Emails and phone-like runs are extracted
from the text with patterns and compared as sets, so the scan stays exact on hundreds of MB.
"""

from __future__ import annotations

import base64
import re

from reliability.report import Row
from reliability.workspace import SECRETS, Suite

GROUP = "Security"
# Around each "@", the characters an address can hold (linear: no pattern scans long runs from every position).
LOCAL = re.compile(r"[A-Za-z0-9._%+\-'!#$&*/=?^`{|}~\u0080-\uffff]*$")
DOMAIN = re.compile(r"[A-Za-z0-9.\-\u0080-\uffff]*")
# Phone spellings: separated groups ("(415) 555-2671", "+1 415.555.2671") and bare digit runs ("+14155552671").
PHONE = re.compile(r"\+?\(?\d[\d ().-]{8,}\d")
DIGITS = re.compile(r"(?<!\d)\+?\d{10,15}(?!\d)")


def _secret_needles() -> dict[str, str]:
    needles = {name: value for name, value in SECRETS.items() if name != "CUSTOMERIO_SITE_ID"}
    basic = f"{SECRETS['CUSTOMERIO_SITE_ID']}:{SECRETS['CUSTOMERIO_API_KEY']}"
    needles["Customer.io Basic credential"] = base64.b64encode(basic.encode()).decode()
    return needles


def pii(suite: Suite) -> tuple[set[str], set[str]]:
    """(emails lowercased, phone digit strings) of every contact."""
    frame = suite.tenant.contacts_frame()
    emails = {str(e).strip().lower() for e in frame["email"].dropna() if "@" in str(e)}
    phones = set()
    for raw in frame["phone"].dropna():
        digits = re.sub(r"\D", "", str(raw))
        if len(digits) >= 10:
            phones.add(digits)
            if len(digits) == 10:
                phones.add("1" + digits)  # the same number written with the country code
    return emails, phones


def find_pii(text: str, emails: set[str], phones: set[str]) -> tuple[set[str], set[str]]:
    found_emails = set()
    at = text.find("@")
    while at != -1:
        local = LOCAL.search(text, max(0, at - 200), at).group(0)
        domain = DOMAIN.match(text, at + 1, at + 256).group(0)
        found_emails.add(f"{local}@{domain}".lower().strip("."))
        at = text.find("@", at + 1)
    found_emails &= emails
    found_phones = {
        re.sub(r"\D", "", m.group(0)) for pattern in (PHONE, DIGITS) for m in pattern.finditer(text)
    }
    return found_emails, found_phones & phones


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    megabytes = suite.transcript.chars() / 1e6
    secrets_row = Row(GROUP, f"secrets in captured logs and error messages ({megabytes:.0f} MB scanned)")
    needles = _secret_needles()
    hits = suite.transcript.scan(needles)
    secrets_row.injections = len(needles)
    secrets_row.case(not hits, duplicates=0, message=None if not hits else f"found: {sorted(hits)}")
    secrets_row.metrics["hits"] = sum(len(v) for v in hits.values())
    secrets_row.note(f"{len(suite.transcript.parts)} captured sources; hits: {secrets_row.metrics['hits']}"
                     + (f" ({', '.join(sorted(hits))} in {sorted({s for v in hits.values() for s in v})[:2]})"
                        if hits else ""))  # fmt: skip

    emails, phones = pii(suite)
    log_row = Row(GROUP, "raw contact email/phone in captured logs and error messages")
    log_row.injections = len(emails) + len(phones)
    found_e, found_p, sources = set(), set(), set()
    for source, text in suite.transcript.parts:
        e, p = find_pii(text, emails, phones)
        if e or p:
            sources.add(source)
        found_e |= e
        found_p |= p
    log_hits = len(found_e) + len(found_p)
    log_row.case(log_hits == 0, message=None if not log_hits else f"in {sorted(sources)[:3]}")
    log_row.metrics["hits"] = log_hits
    log_row.note(f"{len(emails)} emails and {len(phones)} phones searched; hits: {log_hits}")

    ad_row = Row(GROUP, "raw email/phone in request bodies sent to Meta and Google")
    ad_bodies = suite.ad_bodies
    ad_row.injections = len(ad_bodies)
    ad_e, ad_p = set(), set()
    for body in ad_bodies:
        e, p = find_pii(body.decode("utf-8", errors="replace"), emails, phones)
        ad_e |= e
        ad_p |= p
    ad_hits = len(ad_e) + len(ad_p)
    ad_row.case(
        ad_hits == 0 and bool(ad_bodies), message=None if ad_bodies else "no ad requests were captured"
    )
    ad_row.metrics["hits"] = ad_hits
    ad_row.note(
        f"{len(ad_bodies)} request bodies (every Meta and Google request of every scenario); hits: {ad_hits}"
    )
    rows = [secrets_row, log_row, ad_row]
    for row in rows:
        suite.progress(row)
    return rows
