"""Scans, run last: secrets and raw contact PII in everything captured, raw PII in what the ad destinations received.

Two scenarios (not in --quick) first feed the scans what redaction is for: destinations whose error bodies quote a
person's email and phone and a URL with credentials (Customer.io per-op 207s, Google 400s), and each configured URL
(Metronome and the five destinations) written with `user:password@`. Each checks its own runs' captured output and
event log (the echo also the `sync.ledger` / `sync.ledger_items` text); the scans below then cover them too.

Secrets are the distinctive values the suite set (tokens, keys, the webhook secret, Customer.io's Basic credential,
the URL password). PII is the tenant's contacts CSV: every email (as given and normalized) and every phone with at
least 10 digits (as digits, which covers the national, international and E.164 spellings). Emails and phone-like
runs are extracted from the text with patterns and compared as sets, so the scan stays exact on hundreds of MB.
"""

from __future__ import annotations

import base64
import re

from reliability.proxy import Exchange, Rule
from reliability.report import Row
from reliability.scenarios.destinations import BATCH, GOOGLE_MEMBERS
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
    DAY,
    SECRETS,
    SYNC_DAILY,
    Suite,
    Workspace,
    upstream_of,
)

GROUP = "Security"
# Around each "@", the characters an address can hold (linear: no pattern scans long runs from every position).
LOCAL = re.compile(r"[A-Za-z0-9._%+\-'!#$&*/=?^`{|}~\u0080-\uffff]*$")
DOMAIN = re.compile(r"[A-Za-z0-9.\-\u0080-\uffff]*")
# Phone spellings: separated groups ("(415) 555-2671", "+1 415.555.2671") and bare digit runs ("+14155552671").
PHONE = re.compile(r"\+?\(?\d[\d ().-]{8,}\d")
DIGITS = re.compile(r"(?<!\d)\+?\d{10,15}(?!\d)")


URL_PASSWORD = "rlb-url-password-Kc4Hw7Tz2Q"


def _with_userinfo(url: str) -> str:
    return url.replace("://", f"://rlb-user:{URL_PASSWORD}@", 1)


def _secret_needles() -> dict[str, str]:
    needles = {name: value for name, value in SECRETS.items() if name != "CUSTOMERIO_SITE_ID"}
    needles["password in a configured URL"] = URL_PASSWORD
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


def _run_text(suite: Suite, ws: Workspace, *runs: int) -> list[tuple[str, str]]:
    """What the workspace's given runs printed and logged (captured fds and serialized event log)."""
    prefixes = tuple(f"{ws.name} run {n} " for n in runs)
    return [(source, text) for source, text in suite.transcript.parts if source.startswith(prefixes)]


def _ledger_text(ws: Workspace) -> list[tuple[str, str]]:
    """The error text the sync kept in the DuckDB file: request errors and per-item reasons."""
    tables = {f"{s}.{t}" for s, t in ws.query("SELECT schema_name, table_name FROM duckdb_tables()")}
    parts = []
    for table, column in (("sync.ledger", "error"), ("sync.ledger_items", "reason")):
        if table in tables:
            rows = ws.query(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL")
            parts.append((f"{ws.name} {table}.{column}", "\n".join(r[0] for r in rows)))
    return parts


def vendor_echo(suite: Suite, ws: Workspace) -> Row:
    """Customer.io refuses every op quoting its email; Google refuses every request quoting an email, a phone and
    a URL with credentials. What the pipeline keeps of those answers must hold none of them."""
    row = Row(GROUP, "destination error bodies that quote a person's email/phone and a URL with credentials")
    frame = suite.tenant.contacts_frame()
    email = str(frame["email"].dropna().iloc[0]).strip().lower()
    phone = next(str(p) for p in frame["phone"].dropna() if sum(c.isdigit() for c in str(p)) >= 10)
    quoted = f"{email} / {phone} refused; see {_with_userinfo('https://status.example/x')}"

    def refuse_each_op(exchange: Exchange) -> tuple[int, object]:
        ops = (exchange.json() or {}).get("batch") or []
        errors = [{"batch_index": i, "reason": "invalid_email", "field": "email",
                   "message": f"{(op.get('attributes') or {}).get('email')} is not a valid address"}
                  for i, op in enumerate(ops)]  # fmt: skip
        return 207, {"errors": errors}

    d = ws.destinations
    d.cio_proxy.add(Rule("respond", method="POST", path=BATCH, respond=refuse_each_op, times=10**9))
    google_error = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": quoted}}
    d.google_proxy.add(Rule("respond", method="POST", path=GOOGLE_MEMBERS, respond=lambda e: (400, google_error),
                            times=10**9))  # fmt: skip
    outcome = ws.run("daily_retention", DAY, SYNC_DAILY)
    row.injections = d.cio_proxy.injected() + d.google_proxy.injected()
    d.cio_proxy.clear()
    d.google_proxy.clear()
    emails, phones = pii(suite)
    ledger = _ledger_text(ws)
    parts = _run_text(suite, ws, ws.runs) + ledger
    found_e, found_p, sources = set(), set(), set()
    for source, text in parts:
        e, p = find_pii(text, emails, phones)
        if e or p or URL_PASSWORD in text:
            sources.add(source)
        found_e |= e
        found_p |= p
    masked = sum(text.count("<email>") for _, text in ledger)
    clean = not sources and bool(row.injections) and masked > 0
    row.case(
        clean, message=None if clean else f"leaked into {sorted(sources)[:3]}; {masked} masked in the ledger"
    )
    row.metrics["hits"] = len(found_e) + len(found_p)
    row.note(f"{row.injections} refusals quoting PII; run {'failed' if not outcome.success else 'succeeded'}; "
             f"{masked} '<email>' in sync.ledger/ledger_items; hits: {row.metrics['hits']}")  # fmt: skip
    return row


def url_credentials(suite: Suite, ws: Workspace) -> Row:
    """Each system's URL written as `http://user:password@host`, one run each (a failing probe would hide the
    systems set up after it): the password appears in nothing the run printed or logged."""
    row = Row(GROUP, "configured URLs with user:password@ (Metronome and each destination)")
    systems = {"Metronome": ("METRONOME_API_URL",), "Customer.io": ("CUSTOMERIO_TRACK_URL", "CUSTOMERIO_APP_URL"),
               "Meta": ("META_GRAPH_URL",), "Google": ("GOOGLE_DATA_MANAGER_URL",), "TikTok": ("TIKTOK_API_URL",),
               "Pinterest": ("PINTEREST_API_URL",)}  # fmt: skip
    for system, settings in systems.items():
        selection = [["raw", "metronome_customers"]] if system == "Metronome" else SYNC_DAILY
        outcome = ws.run(
            "daily_retention", DAY, selection, env={s: _with_userinfo(ws.env[s]) for s in settings}
        )
        row.injections += len(settings)
        leaks = sorted({source for source, text in _run_text(suite, ws, ws.runs) if URL_PASSWORD in text})
        row.case(not leaks, message=None if not leaks else f"{system}: password in {leaks[:3]}")
        row.note(f"{system}: {'ok' if outcome.success else outcome.message.split(': ', 1)[-1][:70]}")
    return row


def fed_scenarios(suite: Suite) -> list[Row]:
    """The echo and URL scenarios, in one workspace prepared up to its sync (about 45 s: not in --quick)."""
    ws = suite.workspace("security", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    prepared = ws.run("daily_retention", DAY, upstream_of("daily_retention", SYNC_DAILY[0]))
    if not prepared.success:
        raise RuntimeError(f"preparing the security workspace failed: {prepared.message}")
    rows = [vendor_echo(suite, ws), url_credentials(suite, ws)]
    ws.close()
    for row in rows:
        suite.progress(row)
    return rows


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    fed = [] if quick else fed_scenarios(suite)
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

    ad_row = Row(GROUP, "raw email/phone in request bodies sent to Meta, Google, TikTok and Pinterest")
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
        f"{len(ad_bodies)} request bodies (every Meta, Google, TikTok and Pinterest request of every scenario); "
        f"hits: {ad_hits}"
    )
    rows = [secrets_row, log_row, ad_row]
    for row in rows:
        suite.progress(row)
    return fed + rows
