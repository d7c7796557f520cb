"""Metronome faults on each of the six endpoints extraction calls, injected by the proxy in front of the sandbox.

Each case is a fresh DuckDB file and the daily job's extraction assets for one partition; afterwards the raw tables
are compared with the tenant (ids of every snapshot object, every usage row and value). A run that fails must name
the endpoint; then the fault is lifted and one normal re-run must bring the tables to the truth.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from reliability.proxy import Exchange, Rule
from reliability.report import Row
from reliability.workspace import (
    ACTIVATION_HISTORY_DAYS,
    DAY,
    METRONOME_ENDPOINTS,
    RAW_DAILY,
    Suite,
    Workspace,
    daily_usage_window,
)

FOREVER = 10**9
TRUNCATED = b'{"data": [{"id": "'
# What each endpoint's failure message must mention for a person to know where to look.
NAMED_AS = {
    "GET /v1/customers": "/v1/customers",
    "GET /v1/billable-metrics": "billable-metrics",
    "POST /v1/usage": "/v1/usage",
    "GET /v1/customers/{id}/invoices": "invoices",
    "POST /v2/contracts/list": "contracts/list",
    "POST /v1/contracts/customerBalances/list": "customerBalances",
}
PER_CUSTOMER = (
    "GET /v1/customers/{id}/invoices",
    "POST /v2/contracts/list",
    "POST /v1/contracts/customerBalances/list",
)


def _rule(endpoint: str, action: str, **kwargs) -> Rule:
    method, path, when = METRONOME_ENDPOINTS[endpoint]
    extra = kwargs.pop("when", None)
    both = (lambda e: when(e) and extra(e)) if when and extra else (when or extra)
    return Rule(action, method=method, path=path, when=both, **kwargs)


def _body(e: Exchange) -> dict:
    body = e.json()
    return body if isinstance(body, dict) else {}


def request_cursor(e: Exchange) -> str | None:
    return e.query.get("next_page") or _body(e).get("next_page") or _body(e).get("cursor")


def cursor_field(endpoint: str) -> str:
    return "cursor" if endpoint == "POST /v2/contracts/list" else "next_page"


def _on_items(mutate: Callable[[int, dict], bool]):
    """A rewrite applying `mutate(index, item)` to every item of a page; counted only if something changed."""

    def rewrite(e: Exchange, status: int, payload: object):
        if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            return None
        changed = [mutate(i, item) for i, item in enumerate(payload["data"]) if isinstance(item, dict)]
        return (status, payload) if any(changed) else None

    return rewrite


# --- the faults: endpoint → rules (None: does not apply to this endpoint) ------------------------------------------

OPTIONAL_FIELDS = {
    "GET /v1/customers": ("current_billable_status",),
    "GET /v1/billable-metrics": ("aggregation_key", "aggregation_type", "custom_fields", "event_type_filter",
                                 "group_keys", "property_filters", "sql"),
    "GET /v1/customers/{id}/invoices": ("subtotal", "custom_fields", "contract_custom_fields", "customer_custom_fields",
                                        "net_payment_terms_days", "invoice_adjustments", "billable_status",
                                        "amendment_id", "correction_record", "payer"),
    "POST /v2/contracts/list": ("name", "custom_fields", "credits", "rate_card_id", "has_more", "total_contract_value",
                                "priority", "uniqueness_key", "net_payment_terms_days", "subscriptions"),
    "POST /v1/contracts/customerBalances/list": ("name", "custom_fields", "description", "priority", "rate_type",
                                                 "rolled_over_from", "created_by", "applicable_product_ids"),
}  # fmt: skip


def _drop_optional(endpoint: str):
    fields = OPTIONAL_FIELDS.get(endpoint)

    def mutate(index: int, item: dict) -> bool:
        if endpoint == "POST /v1/usage":  # value is optional (null = nothing measured): drop it where it is 0
            if item.get("value") == 0:
                del item["value"]
                return True
            return False
        dropped = [f for f in fields if f in item]
        for f in dropped:
            del item[f]
        if endpoint == "GET /v1/customers" and "salesforce_account_id" in item.get("customer_config", {}):
            del item["customer_config"]["salesforce_account_id"]
            dropped.append("salesforce_account_id")
        return bool(dropped)

    return mutate


UNKNOWN = "RLB_UNKNOWN"  # prefix of every injected enum value, so the raw JSON can be searched for it


def _unknown_enum(endpoint: str):
    def mutate(index: int, item: dict) -> bool:
        if index % 2:  # every other object, so the page mixes known and unknown values
            return False
        if endpoint == "GET /v1/customers":
            item["current_billable_status"] = {"value": f"{UNKNOWN}_SUSPENDED"}
        elif endpoint == "GET /v1/billable-metrics":
            item["aggregation_type"] = f"{UNKNOWN}_PERCENTILE"
        elif endpoint == "GET /v1/customers/{id}/invoices":
            item["type"] = f"{UNKNOWN}_USAGE_V3"
            if isinstance(item.get("external_invoice"), dict):
                item["external_invoice"]["external_status"] = f"{UNKNOWN}_REFUNDED"
            for line in item.get("line_items") or []:
                line["type"] = f"{UNKNOWN}_SURCHARGE"
        elif endpoint == "POST /v2/contracts/list":
            item.setdefault("usage_statement_schedule", {})["frequency"] = f"{UNKNOWN}_BIWEEKLY"
            for transition in item.get("transitions") or []:
                transition["type"] = f"{UNKNOWN}_MERGE"
        elif endpoint == "POST /v1/contracts/customerBalances/list":
            item["rate_type"] = f"{UNKNOWN}_NEGOTIATED"
            for entry in (item.get("ledger") or [])[:1]:
                entry["type"] = f"{UNKNOWN}_LEDGER_ENTRY"
        else:
            return False
        return True

    return mutate


class _PageMemory:
    """Remembers each query's last page, so the next page can repeat its rows."""

    def __init__(self) -> None:
        self.last: dict[str, list] = {}
        self.lock = threading.Lock()

    @staticmethod
    def key(e: Exchange) -> str:
        query = {k: v for k, v in e.query.items() if k not in ("next_page", "limit")}
        body = {k: v for k, v in _body(e).items() if k not in ("next_page", "cursor", "limit")}
        return json.dumps([e.path, query, body], sort_keys=True)

    def rewrite(self, e: Exchange, status: int, payload: object):
        if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            return None
        key = self.key(e)
        with self.lock:
            previous = self.last.get(key) if request_cursor(e) else None
            self.last[key] = list(payload["data"])
        if not previous:
            return None
        payload["data"] = previous + payload["data"]
        return status, payload


def _repeat_previous_page(endpoint: str) -> list[Rule]:
    return [_rule(endpoint, "rewrite", rewrite=_PageMemory().rewrite, times=FOREVER)]


def _empty_page_at_end(endpoint: str) -> list[Rule]:
    """The last page gets a cursor; following it yields an empty page that hands back the same cursor ("nothing
    new yet, come back with this"), as Metronome documents for audit logs: the SDK's auto-pager loops on it."""
    field = cursor_field(endpoint)
    fake = "rlb-caught-up"

    def last_page(e: Exchange, status: int, payload: object):
        if status == 200 and isinstance(payload, dict) and payload.get(field) is None and payload.get("data"):
            payload[field] = fake
            return status, payload
        return None

    return [
        _rule(endpoint, "respond", respond=lambda e: (200, {"data": [], field: fake}),
              when=lambda e: request_cursor(e) == fake, times=FOREVER),
        _rule(endpoint, "rewrite", rewrite=last_page, times=FOREVER, counted=False),
    ]  # fmt: skip


MID = "rlb-mid-list:"


def _with_cursor(e: Exchange, cursor: str) -> tuple[str, bytes]:
    """The request as sent, with its cursor (query `next_page`, or body `next_page` / `cursor`) replaced."""
    query = dict(e.query)
    body = _body(e)
    if "next_page" in query:
        query["next_page"] = cursor
    for key in ("next_page", "cursor"):
        if key in body:
            body[key] = cursor
    target = e.path + (f"?{urlencode(query)}" if query else "")
    return target, (json.dumps(body).encode() if body else e.body)


def _empty_page_mid_list(endpoint: str) -> list[Rule]:
    """Before the second page the server interjects an empty page whose cursor leads on to the real second page
    (as a server filtering a page down to nothing would): the rows behind it must still be read."""
    field = cursor_field(endpoint)
    served: set[str] = set()
    lock = threading.Lock()

    def interject(e: Exchange) -> bool:
        cursor = request_cursor(e)
        if not cursor or cursor.startswith(MID):
            return False
        with lock:
            key = _PageMemory.key(e)
            first = key not in served
            served.add(key)
        return first

    return [
        _rule(endpoint, "forward_as", retarget=lambda e: _with_cursor(e, request_cursor(e).removeprefix(MID)),
              when=lambda e: (request_cursor(e) or "").startswith(MID), times=FOREVER, counted=False),
        _rule(endpoint, "respond", respond=lambda e: (200, {"data": [], field: MID + request_cursor(e)}),
              when=interject, times=FOREVER),
    ]  # fmt: skip


def _without_data(endpoint: str) -> list[Rule]:
    return [_rule(endpoint, "status", status=200, body=b"{}", times=FOREVER)]


def _deleted_customer(customer_id: str):
    def rules(endpoint: str) -> list[Rule] | None:
        if endpoint not in PER_CUSTOMER:
            return None
        return [
            _rule(
                endpoint, "status", status=404, body=json.dumps({"message": f"Customer {customer_id} not found"}).encode(),
                when=lambda e: customer_id in e.path or _body(e).get("customer_id") == customer_id, times=FOREVER,
            )
        ]  # fmt: skip

    return rules


def _status(status: int, times: int, headers: dict | None = None):
    body = json.dumps({"message": {429: "Too many requests", 500: "Internal server error", 502: "Bad gateway",
                                   503: "Service unavailable"}[status]}).encode()  # fmt: skip
    return lambda endpoint: [
        _rule(endpoint, "status", status=status, body=body, headers=headers or {}, times=times)
    ]


@dataclass
class MetronomeFault:
    name: str
    rules: Callable[[str], list[Rule] | None]
    note: str
    expect_failure: bool = False  # the design answers this fault by failing the run (then a re-run recovers)
    env: dict | None = None
    finding: str | None = None
    quick: bool = False
    together: tuple[str, ...] | None = None  # endpoints faulted in one run even in full mode


def faults(suite: Suite) -> list[MetronomeFault]:
    deleted = suite.deleted_customer
    return [
        MetronomeFault("429 with Retry-After: 1 (twice)", _status(429, 2, {"Retry-After": "1"}),
                       "waited Retry-After, same run"),
        MetronomeFault("429 without Retry-After (twice)",
                       _status(429, 2, {"X-Metronome-Rate-Limit-Type": "customer"}), "SDK backoff, same run"),
        MetronomeFault("500, then 502, then 503",
                       lambda ep: _status(500, 1)(ep) + _status(502, 1)(ep) + _status(503, 1)(ep),
                       "three retries, same run"),
        MetronomeFault("timeout (answer stalled 3 s > RETENTION_METRONOME_TIMEOUT_S=2)",
                       lambda ep: [_rule(ep, "stall", seconds=3, times=1)], "retried after the timeout"),
        MetronomeFault("connection reset (TCP RST)", lambda ep: [_rule(ep, "reset", times=1)], "retried",
                       quick=True),
        MetronomeFault("malformed JSON (truncated 200 body, once)",
                       lambda ep: [_rule(ep, "status", status=200, body=TRUNCATED, times=1)],
                       "step failed, Dagster RetryPolicy re-ran it"),
        MetronomeFault("missing optional fields (every answer)",
                       lambda ep: [_rule(ep, "rewrite", rewrite=_on_items(_drop_optional(ep)), times=FOREVER)],
                       "usage: `value` dropped where 0 (stored NULL)"),
        MetronomeFault("unknown enum values (every other object)",
                       lambda ep: None if ep == "POST /v1/usage" else
                       [_rule(ep, "rewrite", rewrite=_on_items(_unknown_enum(ep)), times=FOREVER)],
                       "usage rows have no enum field; injected values kept verbatim in `raw`"),
        MetronomeFault("page repeating the previous page's rows", _repeat_previous_page,
                       "pages forced small by the proxy; repeats deduplicated", quick=True),
        MetronomeFault("empty page that still carries a cursor (after the last rows)", _empty_page_at_end,
                       "paging stopped on the empty page (the SDK's auto-pager would loop)"),
        MetronomeFault(f"customer deleted between list and detail (404 for {deleted[:8]}…)",
                       _deleted_customer(deleted), "skipped with a warning naming the customer", quick=True,
                       together=PER_CUSTOMER),
        MetronomeFault("503 on every attempt (retries exhausted)", _status(503, FOREVER),
                       "fails naming the endpoint; normal re-run recovers", expect_failure=True,
                       env={"RETENTION_METRONOME_MAX_RETRIES": "1"}),
        MetronomeFault("malformed JSON on every attempt",
                       lambda ep: [_rule(ep, "status", status=200, body=TRUNCATED, times=FOREVER)],
                       "must fail naming the endpoint", expect_failure=True,
                       env={"RETENTION_METRONOME_MAX_RETRIES": "1"}, finding="F3"),
        MetronomeFault("200 whose body has no `data` (`{}`)", _without_data,
                       "must fail, not replace the table with nothing", expect_failure=True, finding="F1"),
        MetronomeFault("empty page with a cursor in the middle of a list", _empty_page_mid_list,
                       "must follow the cursor or fail, not stop", finding="F2"),
    ]  # fmt: skip


ROOTS = ("GET /v1/customers", "GET /v1/billable-metrics", "POST /v1/usage")


def _endpoint_groups(fault: MetronomeFault, quick: bool) -> list[list[str]]:
    """Which endpoints are faulted together in one run.

    A fault the pipeline absorbs: all six in one run (each step meets its own fault). A fault that fails the
    run: the three independent root endpoints in one run and the three per-customer ones in another (a failed
    customer list would skip the per-customer steps); their Dagster retries overlap, so this costs two runs, not
    six. Quick mode faults one representative endpoint in that case."""
    if fault.together:
        return [list(fault.together)]
    if not fault.expect_failure:
        return [list(METRONOME_ENDPOINTS)]
    if quick:
        return [["GET /v1/customers/{id}/invoices"]]
    return [list(ROOTS), list(PER_CUSTOMER)]


def _raw_ok(ws: Workspace, deleted: set[str], null_means_zero: bool = False):
    return ws.raw_check(
        [daily_usage_window(ws.history_days)], deleted_customers=deleted, null_means_zero=null_means_zero
    )


def run_fault(suite: Suite, fault: MetronomeFault, quick: bool) -> Row:
    """One case per faulted endpoint: recovered when the run absorbed the fault and the raw tables equal the truth,
    or when the run failed naming that endpoint and a normal re-run restored the truth."""
    row = Row("Metronome (every endpoint extraction calls)", fault.name)
    endpoints_hit = set()
    for group in _endpoint_groups(fault, quick):
        rules = {ep: fault.rules(ep) for ep in group}
        rules = {ep: r for ep, r in rules.items() if r}
        if not rules:
            continue
        suite.proxy.clear()
        for endpoint_rules in rules.values():
            for rule in endpoint_rules:
                suite.proxy.add(rule)
        ws = suite.workspace(f"metronome-{fault.name[:20]}")
        try:
            outcome = ws.run("daily_retention", DAY, RAW_DAILY, env=fault.env)
            injected = suite.proxy.injected()
        finally:
            suite.proxy.clear()
        row.injections += injected
        endpoints_hit |= set(rules)
        deleted = {suite.deleted_customer} if fault.together == PER_CUSTOMER else set()
        check = _raw_ok(ws, deleted, null_means_zero="optional" in fault.name)
        label = ", ".join(rules)
        if outcome.success:
            recovered = check.equal
            if deleted:
                recovered = recovered and any(suite.deleted_customer in w for w in outcome.warnings)
            if fault.name.startswith("unknown enum"):
                kept = ws.query_count_raw_containing(UNKNOWN)
                row.metrics["unknown_values_kept_objects"] = (
                    row.metrics.get("unknown_values_kept_objects", 0) + kept
                )
                recovered = recovered and kept > 0
            message = (
                None
                if recovered
                else f"{label}: run succeeded but {'; '.join(check.details) or 'checks failed'}"
            )
            for i, _ in enumerate(rules):
                row.case(recovered, lost=check.lost if i == 0 else 0, duplicates=check.duplicates if i == 0 else 0,
                         message=message, finding=fault.finding)  # fmt: skip
        else:
            for error in outcome.errors:
                row.messages.append(error[:300])
            rerun = ws.run("daily_retention", DAY, RAW_DAILY)
            check = _raw_ok(ws, deleted)
            skipped = [
                ep
                for ep in rules
                if ep in PER_CUSTOMER and any("metronome_customers" in s for s in outcome.failed_steps)
            ]
            for i, endpoint in enumerate(rules):
                named = any(NAMED_AS[endpoint].lower() in error.lower() for error in outcome.errors)
                row.case((named or endpoint in skipped) and rerun.success and check.equal,
                         lost=check.lost if i == 0 else 0, duplicates=check.duplicates if i == 0 else 0,
                         finding=fault.finding,
                         message=None if named else f"{endpoint}: failure does not name it")  # fmt: skip
        ws.close()
    row.note(fault.note)
    if len(endpoints_hit) < len(METRONOME_ENDPOINTS) and not quick:
        row.note(f"applies to {len(endpoints_hit)} of {len(METRONOME_ENDPOINTS)} endpoints")
    return row


def full_job_with_odd_answers(suite: Suite) -> Row:
    """Unknown enums and missing optional fields on every endpoint at once, through models, segments and sync."""
    row = Row(
        "Metronome (every endpoint extraction calls)",
        "unknown enums + missing optional fields, whole daily job",
    )
    suite.proxy.clear()
    for endpoint in METRONOME_ENDPOINTS:
        for mutate in (_unknown_enum(endpoint), _drop_optional(endpoint)):
            suite.proxy.add(_rule(endpoint, "rewrite", rewrite=_on_items(mutate), times=FOREVER))
    ws = suite.workspace("metronome-odd-answers-full-job", history_days=ACTIVATION_HISTORY_DAYS)
    try:
        outcome = ws.run("daily_retention", DAY)
        row.injections = suite.proxy.injected()
    finally:
        suite.proxy.clear()
    check = _raw_ok(ws, set(), null_means_zero=True)
    if outcome.success:
        row.case(check.equal, lost=check.lost, duplicates=check.duplicates)
        row.note("completed: models, segments, sync and measurement accept the odd values")
    else:
        row.case(False, lost=check.lost, message=outcome.message)
        row.note(f"failed: {outcome.message[:200]}")
    ws.close()
    return row


def scenarios(suite: Suite, quick: bool) -> list[Row]:
    """--quick: a transport fault (connection reset), a paging fault (a repeated page) and a customer deleted
    mid-run; 429s and empty pages are also tests in make test (source/test_extraction.py, test_paging_and_config.py)."""
    rows = []
    for fault in faults(suite):
        if quick and not fault.quick:
            continue
        rows.append(run_fault(suite, fault, quick))
        suite.progress(rows[-1])
    if not quick:
        rows.append(full_job_with_odd_answers(suite))
        suite.progress(rows[-1])
    return rows
