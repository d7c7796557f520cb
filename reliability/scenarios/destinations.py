"""Destination faults: Customer.io, Meta, Google, TikTok and Pinterest sandboxes on loopback, each behind a
recording fault proxy.

Every case starts from the same prepared DuckDB file (the daily job up to its sync, run once) and fresh, empty
destination sandboxes, runs the daily sync with the fault, and checks the destinations against the desired state
(`segments.audiences` through the engine's own desired-state SQL): Customer.io manual segments and attributes, Meta
audience rows, Google user lists, the people of the TikTok audience and Pinterest customer list the pipeline
created and recorded for each segment (and no other audience or list holding anyone); no planned item left
unacknowledged; every Customer.io event accepted once. TikTok and Pinterest uploads are cut into requests of
`AD_BATCH` people, so a fault can land in the middle of a segment's upload. Where the design retries rejected items
on the next run, one normal sync follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from reliability.proxy import Exchange, Rule
from reliability.report import Row
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
    AD_BATCH,
    DAY,
    DESTINATION_TIMEOUT_S,
    SYNC_DAILY,
    Destinations,
    Suite,
    upstream_of,
)

GROUP = "Destinations"
BATCH = r"/api/v2/batch$"
SEGMENT_CALL = r"/api/v1/segments/[^/]+/(add|remove)_customers$"
META_USERS = r"/\d+/users$"
GOOGLE_MEMBERS = r"/v1/audienceMembers:(ingest|remove)$"
TIKTOK_MAPPING = r"/open_api/v1\.\d+/segment/mapping/$"
TIKTOK_AUDIENCE = r"/open_api/v1\.\d+/segment/audience/$"
PINTEREST_LISTS = r"/v5/ad_accounts/\d+/customer_lists$"  # POST: create a list from its first records
PINTEREST_LIST = r"/v5/ad_accounts/\d+/customer_lists/[^/]+$"  # PATCH: ADD / REMOVE records
RETRIES = 5  # the destination clients' default max_retries: 1 + 5 attempts per request


def _tiktok(code: int, message: str) -> bytes:
    """TikTok's envelope (always HTTP 200; `code` says what happened)."""
    return json.dumps(
        {"code": code, "message": message, "request_id": "rlb202611200000", "data": {}}
    ).encode()


TIKTOK_THROTTLE = "Too many requests. Please retry in some time."
PINTEREST_RATE = json.dumps({"code": 8, "message": "This request exceeded a rate limit."}).encode()
PINTEREST_RATE_HEADERS = {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"}


def _nth_request(n: int) -> Callable[[Exchange], bool]:
    """Matches the n-th distinct request body seen on the rule's path and every resend of it (a retry sends the
    same body): a fault in the middle of an upload, on the same request however often it is retried."""
    seen: list[bytes] = []

    def when(exchange: Exchange) -> bool:
        if exchange.body not in seen:
            seen.append(exchange.body)
        return len(seen) >= n and exchange.body == seen[n - 1]

    return when


def _tiktok_partial(e: Exchange, status: int, payload: object):
    """TikTok applied the request but answers 20001 "partially OK", which names no rows."""
    if status != 200 or not isinstance(payload, dict) or payload.get("code") != 0:
        return None
    return 200, {**payload, "code": 20001, "message": "Partial success."}


def _graph_error(code: int, message: str, subcode: int | None = None, transient: bool = True) -> bytes:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "rlbTrace"}
    if subcode:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    return json.dumps({"error": error}).encode()


BUC = {"X-Business-Use-Case-Usage": json.dumps({"1234567890": [{"type": "custom_audience", "call_count": 100,
                                                                 "estimated_time_to_regain_access": 0}]})}  # fmt: skip
RESOURCE_EXHAUSTED = json.dumps({"error": {
    "code": 429, "status": "RESOURCE_EXHAUSTED",
    "message": "Quota exceeded for quota metric 'Ingestion requests' and limit 'IngestionMutateRequestsPerMinutePerProject'.",
    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                 "domain": "googleapis.com", "metadata": {"quota_limit": "IngestionMutateRequestsPerMinutePerProject"}}],
}}).encode()  # fmt: skip


def _invalid_entry(e: Exchange, status: int, payload: object):
    """Meta accepted the rows but reports the first one as an invalid entry (with its value as the sample)."""
    body = e.json()
    rows = (body or {}).get("payload", {}).get("data") if isinstance(body, dict) else None
    if status != 200 or not rows or not isinstance(payload, dict):
        return None
    payload["num_invalid_entries"] = 1
    payload["invalid_entry_samples"] = {rows[0][0] or rows[0][1]: "Invalid format"}
    return status, payload


@dataclass
class DestinationFault:
    destination: str
    name: str
    arm: Callable[[Destinations], None]
    note: str
    rerun: bool = False  # the design retries this fault's items on the next run
    disarm: Callable[[Destinations], None] | None = None
    quick: bool = False


def _proxy(d: Destinations, destination: str):
    return d.proxy(destination)


def _rules(destination: str, *rules: Rule) -> Callable[[Destinations], None]:
    def arm(d: Destinations) -> None:
        for rule in rules:
            _proxy(d, destination).add(rule)

    return arm


def _statuses(
    path: str, *statuses: int, body: bytes | None = None, headers: dict | None = None
) -> list[Rule]:
    return [
        Rule("status", method="POST", path=path, status=s, body=body, headers=headers or {}) for s in statuses
    ]


def _reject_people(d: Destinations) -> None:
    people = sorted(d.cio_candidates)[:3]
    d.cio.reject_identifiers(*people)


def _accept_people(d: Destinations) -> None:
    d.cio._rejected.clear()  # the workspace fixed the data: the destination accepts them again


def faults() -> list[DestinationFault]:
    cio_body = json.dumps({"meta": {"error": "Your request is over the 100-per-second limit."}}).encode()
    batch_400 = json.dumps(
        {"errors": [{"reason": "invalid", "field": "batch", "message": "malformed op"}]}
    ).encode()
    return [
        # Customer.io
        DestinationFault("customerio", "429 with Retry-After: 1 (batch ×2, segment add ×1)",
                         _rules("customerio", *_statuses(BATCH, 429, 429, body=cio_body, headers={"Retry-After": "1"}),
                                Rule("status", path=SEGMENT_CALL, status=429, body=cio_body, headers={"Retry-After": "1"})),
                         "same run"),
        DestinationFault("customerio", "429 without Retry-After (×2)",
                         _rules("customerio", *_statuses(BATCH, 429, 429, body=cio_body)), "backoff, same run"),
        DestinationFault("customerio", "500, 502, 503 (batch) and 503 (segment add)",
                         _rules("customerio", *_statuses(BATCH, 500, 502, 503), *_statuses(SEGMENT_CALL, 503)),
                         "same run"),
        DestinationFault("customerio", f"timeout before processing (batch stalled {DESTINATION_TIMEOUT_S + 2} s)",
                         _rules("customerio", Rule("stall", method="POST", path=BATCH, seconds=DESTINATION_TIMEOUT_S + 2)),
                         "client timeout, resent"),
        DestinationFault("customerio", "timeout after processing (batch applied, answer lost)",
                         _rules("customerio", Rule("stall", method="POST", path=BATCH, seconds=DESTINATION_TIMEOUT_S + 2,
                                                   forward_first=True)),
                         "resent events dropped by their ids"),
        DestinationFault("customerio", "connection reset after processing (batch applied)",
                         _rules("customerio", Rule("reset", method="POST", path=BATCH, forward_first=True),
                                Rule("reset", method="POST", path=SEGMENT_CALL, forward_first=True)),
                         "resent; event ids and idempotent segment calls absorb it", quick=True),
        DestinationFault("customerio", "207: per-item errors for 3 people", _reject_people,
                         "rejected with reason, retried next run", rerun=True, disarm=_accept_people),
        DestinationFault("customerio", "400: whole batch rejected once",
                         _rules("customerio", *_statuses(BATCH, 400, body=batch_400)), "bisected, same run"),
        # Meta
        DestinationFault("meta", "throttle code 80003 (HTTP 400, X-Business-Use-Case-Usage) ×2",
                         _rules("meta", *[Rule("status", path=META_USERS, status=400,
                                               body=_graph_error(80003, "There have been too many calls to this "
                                                                 "ad-account."), headers=BUC) for _ in range(2)]),
                         "waited, same run"),
        DestinationFault("meta", "throttle codes 17, 613, 4, 80004",
                         _rules("meta", *[Rule("status", path=META_USERS, status=400,
                                               body=_graph_error(c, "User request limit reached", transient=False))
                                          for c in (17, 613, 4, 80004)]), "waited, same run"),
        DestinationFault("meta", "429 and 500, 503", _rules("meta", *[Rule("status", path=META_USERS,
                                                                         status=s, body=_graph_error(1, "error"))
                                                                    for s in (429, 500, 503)]), "same run"),
        DestinationFault("meta", f"timeout before processing (stalled {DESTINATION_TIMEOUT_S + 2} s)",
                         _rules("meta", Rule("stall", path=META_USERS, seconds=DESTINATION_TIMEOUT_S + 2)),
                         "client timeout, resent"),
        DestinationFault("meta", "connection reset after processing",
                         _rules("meta", Rule("reset", path=META_USERS, forward_first=True)),
                         "resent; adds are idempotent"),
        DestinationFault("meta", "invalid entries (num_invalid_entries with a sample)",
                         _rules("meta", Rule("rewrite", path=META_USERS, rewrite=_invalid_entry)),
                         "row rejected with reason, retried next run", rerun=True, quick=True),
        # Google
        DestinationFault("google", "429 RESOURCE_EXHAUSTED (ErrorInfo quota_limit) ×2",
                         _rules("google", *_statuses(GOOGLE_MEMBERS, 429, 429, body=RESOURCE_EXHAUSTED)),
                         "backoff, same run"),
        DestinationFault("google", "500, 502, 503",
                         _rules("google", *_statuses(GOOGLE_MEMBERS, 500, 502, 503)), "same run"),
        DestinationFault("google", f"timeout before processing (stalled {DESTINATION_TIMEOUT_S + 2} s)",
                         _rules("google", Rule("stall", method="POST", path=GOOGLE_MEMBERS, seconds=DESTINATION_TIMEOUT_S + 2)),
                         "client timeout, resent"),
        DestinationFault("google", "connection reset after processing",
                         _rules("google", Rule("reset", method="POST", path=GOOGLE_MEMBERS, forward_first=True)),
                         "resent; ingest is idempotent per member"),
        # TikTok (Segment API: every answer HTTP 200 with an envelope code, no Retry-After, no per-row result)
        DestinationFault("tiktok", "throttle storm: codes 40100, 40100, 40016, 40133 on one request",
                         _rules("tiktok", *[Rule("status", method="POST", path=TIKTOK_MAPPING, status=200,
                                                 body=_tiktok(c, TIKTOK_THROTTLE)) for c in (40100, 40100, 40016, 40133)]),
                         "backoff, same run"),
        DestinationFault("tiktok", f"throttle storm outlasting the retries: 40100 on all {RETRIES + 1} attempts of a request",
                         _rules("tiktok", Rule("status", method="POST", path=TIKTOK_MAPPING, status=200, times=RETRIES + 1,
                                               body=_tiktok(40100, TIKTOK_THROTTLE), when=_nth_request(1))),
                         "retries exhausted; that request's rows retried next run", rerun=True),
        DestinationFault("tiktok", "TikTok-side errors: codes 50000, 60001, 40202 (write conflict)",
                         _rules("tiktok", *[Rule("status", method="POST", path=TIKTOK_MAPPING, status=200,
                                                 body=_tiktok(c, "Internal error, please retry.")) for c in (50000, 60001, 40202)]),
                         "same run"),
        DestinationFault("tiktok", "500, 502, 503", _rules("tiktok", *_statuses(TIKTOK_MAPPING, 500, 502, 503)), "same run"),
        DestinationFault("tiktok", f"503 mid-batch (the 2nd request of the upload, {AD_BATCH} rows per request)",
                         _rules("tiktok", Rule("status", method="POST", path=TIKTOK_MAPPING, status=503, when=_nth_request(2))),
                         "retried, same run", quick=True),
        DestinationFault("tiktok", f"5xx mid-batch on all {RETRIES + 1} attempts of the 2nd request",
                         _rules("tiktok", Rule("status", method="POST", path=TIKTOK_MAPPING, status=503, times=RETRIES + 1,
                                               when=_nth_request(2))),
                         "the other requests acknowledged; that request's rows retried next run", rerun=True),
        DestinationFault("tiktok", f"timeout before processing (stalled {DESTINATION_TIMEOUT_S + 2} s)",
                         _rules("tiktok", Rule("stall", method="POST", path=TIKTOK_MAPPING, seconds=DESTINATION_TIMEOUT_S + 2)),
                         "client timeout, resent"),
        DestinationFault("tiktok", "connection reset after processing (mapping applied, answer lost)",
                         _rules("tiktok", Rule("reset", method="POST", path=TIKTOK_MAPPING, forward_first=True)),
                         "resent; add and delete are set operations"),
        DestinationFault("tiktok", "40011 too many IDs (once)",
                         _rules("tiktok", Rule("status", method="POST", path=TIKTOK_MAPPING, status=200,
                                               body=_tiktok(40011, "Too many IDs."))),
                         "batch halved and resent, same run"),
        DestinationFault("tiktok", "20001 partially OK (applied, no rows named)",
                         _rules("tiktok", Rule("rewrite", method="POST", path=TIKTOK_MAPPING, rewrite=_tiktok_partial)),
                         "whole request reported failed; resent next run", rerun=True),
        DestinationFault("tiktok", "audience creation: connection reset after processing (created, answer lost)",
                         _rules("tiktok", Rule("reset", method="POST", path=TIKTOK_AUDIENCE, forward_first=True)),
                         "creation resent"),
        DestinationFault("tiktok", f"audience creation: 503 on all {RETRIES + 1} attempts",
                         _rules("tiktok", Rule("status", method="POST", path=TIKTOK_AUDIENCE, status=503, times=RETRIES + 1)),
                         "that segment not synced this run; created next run", rerun=True),
        # Pinterest (REST v5: records as one comma-separated string; 429 code 8 with x-ratelimit-*, no Retry-After)
        DestinationFault("pinterest", "rate-limit storm: 429 code 8 with x-ratelimit-* headers ×3",
                         _rules("pinterest", *[Rule("status", method="PATCH", path=PINTEREST_LIST, status=429,
                                                    body=PINTEREST_RATE, headers=PINTEREST_RATE_HEADERS) for _ in range(3)]),
                         "backoff, same run"),
        DestinationFault("pinterest", "500, 502, 503",
                         _rules("pinterest", *[Rule("status", method="PATCH", path=PINTEREST_LIST, status=s)
                                               for s in (500, 502, 503)]), "same run"),
        DestinationFault("pinterest", f"503 mid-batch on all {RETRIES + 1} attempts of the 2nd request ({AD_BATCH} records per request)",
                         _rules("pinterest", Rule("status", method="PATCH", path=PINTEREST_LIST, status=503, times=RETRIES + 1,
                                                  when=_nth_request(2))),
                         "the other requests acknowledged; that request's records retried next run", rerun=True),
        DestinationFault("pinterest", f"timeout before processing (stalled {DESTINATION_TIMEOUT_S + 2} s)",
                         _rules("pinterest", Rule("stall", method="PATCH", path=PINTEREST_LIST, seconds=DESTINATION_TIMEOUT_S + 2)),
                         "client timeout, resent"),
        DestinationFault("pinterest", "connection reset after processing (PATCH applied, answer lost)",
                         _rules("pinterest", Rule("reset", method="PATCH", path=PINTEREST_LIST, forward_first=True)),
                         "resent; ADD and REMOVE are set operations"),
        DestinationFault("pinterest", "list creation answered 503 (a create is not retried)",
                         _rules("pinterest", Rule("status", method="POST", path=PINTEREST_LISTS, status=503)),
                         "that segment's adds fail naming Pinterest; list created next run", rerun=True),
        DestinationFault("pinterest", "list creation: connection reset after processing (created, answer lost)",
                         _rules("pinterest", Rule("reset", method="POST", path=PINTEREST_LISTS, forward_first=True)),
                         "not resent (a create is not idempotent); list created next run", rerun=True),
        # Outage
        DestinationFault("customerio", "outage: every Customer.io request 503 for a whole run",
                         _rules("customerio", Rule("status", method="POST", path=BATCH, status=503, times=10**9)),
                         "retries exhausted; items retried next run", rerun=True),
    ]  # fmt: skip


def prepare_base(suite: Suite) -> None:
    """The daily job up to its sync, once; every destination case starts from a copy of this file."""
    if suite.base_daily is not None:
        return
    ws = suite.workspace("destinations-base", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    outcome = ws.run("daily_retention", DAY, upstream_of("daily_retention", SYNC_DAILY[0]))
    if not outcome.success:
        raise RuntimeError(f"preparing the destination base failed: {outcome.message}")
    suite.base_daily = suite.root / "base-daily.duckdb"
    ws.snapshot_db(suite.base_daily)
    ws.close()


def run_fault(suite: Suite, fault: DestinationFault) -> Row:
    prepare_base(suite)
    row = Row(GROUP, f"{fault.destination}: {fault.name}")
    ws = suite.workspace(f"dest-{fault.destination}", history_days=ACTIVATION_HISTORY_DAYS, destinations=True)
    ws.adopt_db(suite.base_daily)
    d = ws.destinations
    d.cio_candidates = {
        r[0]
        for r in ws.query(
            "SELECT person_id FROM segments.audiences WHERE destination = 'customerio' AND person_id IS NOT NULL"
        )
    }
    fault.arm(d)
    first = ws.run("daily_retention", DAY, SYNC_DAILY)
    row.injections = sum(p.injected() for p in d.proxies)
    rejected = ws.query(
        "SELECT destination, count(*), any_value(reason) FROM sync.ledger_items WHERE status = 'rejected' GROUP BY 1"
    )
    if fault.name.startswith("207"):
        row.injections = sum(n for dest, n, _ in rejected if dest == "customerio")
    for proxy in d.proxies:
        proxy.clear()
    if fault.disarm:
        fault.disarm(d)
    check = ws.destination_check("daily")
    notes, named = [fault.note], True
    if not first.success:
        named = first.names(fault.destination.replace("customerio", "customer.io")) or first.names(
            fault.destination
        )
        row.messages.append(first.message[:300])
        notes.append(f"run failed{' naming the destination' if named else ' WITHOUT naming the destination'}: "
                     f"{first.errors[0][:90] if first.errors else ''}")  # fmt: skip
    elif not check.converged:
        loud = [f"check {c} failed" for c in first.failed_checks if "acknowledged" in c] + [
            f"warning: {w[:70]}" for w in first.warnings if "reject" in w.lower() or "acknowledg" in w.lower()
        ]
        reasons = "; ".join(f"{dst}: {r}" for dst, _, r in rejected)
        # The unit skipped because its object could not be created (the wording has changed; the cause has not).
        created = [w for w in first.warnings if f"→ {fault.destination}:" in w and "creat" in w.lower()]
        quiet = (
            f", run green with only a warning: {created[0][:90]}"
            if created
            else ", no warning and no failed check"
        )
        notes.append(f"first run completed with {check.pending} item(s) unacknowledged"
                     + (f" ({'; '.join(loud)})" if loud else quiet))  # fmt: skip
        if rejected:
            notes.append(f"reasons in sync.ledger_items: {reasons[:160]}")
        if not loud and created:
            row.flag("F20", f"object creation failed, run green with a warning only: {created[0][:120]}")
        elif not loud:
            row.flag(
                "F4", f"silent partial success: {check.pending} item(s) unacknowledged, run green, no warning"
            )
        if "session has already finished" in reasons:
            row.flag("F5", "Meta refused the retried final batch: session already finished")
    if fault.rerun or not check.converged:
        second = ws.run("daily_retention", DAY, SYNC_DAILY)
        check = ws.destination_check("daily")
        converged = second.success and check.converged
        notes.append("converged after one normal re-run" if converged else "did not converge after a re-run")
        if not second.success:
            row.messages.append(second.message[:300])
    else:
        converged = first.success
        notes.append("converged in the same run")
    recovered = converged and check.converged and named
    if check.dropped_duplicate_events:
        notes.append(f"{check.dropped_duplicate_events} resent event(s) dropped by id")
    if check.orphans:
        notes.append(f"untracked objects left at the destination: {'; '.join(check.orphans)[:160]}")
    # A Pinterest list created but its answer lost is left holding its first records, untracked (F19).
    orphaned = "F19" if check.duplicates and check.only("pinterest") and not check.diverged else None
    row.case(recovered, lost=check.diverged + check.pending, duplicates=check.duplicates,
             message=None if recovered and not check.duplicates else "; ".join(check.details)[:300],
             finding=orphaned)  # fmt: skip
    row.notes = "; ".join(n for n in notes if n)
    ws.close()
    return row


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    """--quick: one fault per kind, each on another destination: a batch applied but its answer lost (Customer.io
    reset), rows rejected and retried next run (Meta), a transient 5xx mid-batch (TikTok). The throttles and
    Customer.io's 207 are also tests in make test (test_google.py, test_pinterest.py, test_customerio.py)."""
    rows = []
    for fault in faults():
        if quick and not fault.quick:
            continue
        rows.append(run_fault(suite, fault))
        suite.progress(rows[-1])
    return rows
