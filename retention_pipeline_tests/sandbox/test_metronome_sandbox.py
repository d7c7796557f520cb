"""The Metronome sandbox against the official SDK in strict mode, over loopback only.

Strict response validation makes the SDK reject any object missing a required field or carrying an unknown enum
value, so every list below doubles as a wire-format check. The tenant's own attributes are the truth the pages
are compared against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import metronome
import numpy as np
import pandas as pd
import phonenumbers
import pytest

from retention_pipeline.sandbox.metronome import tenant as tenant_module
from retention_pipeline.sandbox.metronome.server import MetronomeSandbox
from retention_pipeline.sandbox.metronome.tenant import PROFILES, TenantSpec, build_tenant

NOW = datetime(2026, 3, 15, 10, 37, tzinfo=UTC)
ANCHOR = datetime(2026, 3, 15, tzinfo=UTC)
SPEC = TenantSpec(seed=7, customers=60, history_days=120, now=NOW)
USAGE_PAGE_SIZE = 1000


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture(scope="module")
def sandbox() -> MetronomeSandbox:
    return MetronomeSandbox(build_tenant(SPEC), usage_page_size=USAGE_PAGE_SIZE)


@pytest.fixture(scope="module")
def server(sandbox: MetronomeSandbox):
    with sandbox.serve("127.0.0.1", 0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> metronome.Metronome:
    with metronome.Metronome(
        bearer_token="t", base_url=server.url, _strict_response_validation=True, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
def faults(sandbox: MetronomeSandbox):
    yield sandbox.faults
    sandbox.faults.clear()


def assert_wire_equal(models: list, truth: list[dict]) -> None:
    """Parsed SDK objects equal the tenant's wire dicts (both sides normalised through the same model)."""
    assert len(models) == len(truth)
    for model, expected in zip(models, truth, strict=True):
        assert model.to_dict(mode="json") == type(model).model_validate(expected).to_dict(mode="json")


def assert_unique(ids: list[str]) -> None:
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicated across pages: {duplicates[:3]}"


# --- every endpoint, paged through the SDK -----------------------------------------------------------------------


def test_customer_lists_split_active_and_archived(client, sandbox):
    tenant = sandbox.tenant
    active = list(client.v1.customers.list(limit=7))
    archived = list(client.v1.customers.list(only_archived=True, limit=2))
    assert_unique([c.id for c in active + archived])
    assert {c.id for c in active} == {c["id"] for c in tenant.customers if c["archived_at"] is None}
    assert {c.id for c in archived} == {c["id"] for c in tenant.customers if c["archived_at"] is not None}
    assert all(c.archived_at is not None for c in archived)


def test_customer_retrieve_and_filters(client, sandbox):
    tenant = sandbox.tenant
    truth = tenant.customers[3]
    assert_wire_equal([client.v1.customers.retrieve(customer_id=truth["id"]).data], [truth])
    wanted = [c["id"] for c in tenant.customers[:5] if c["archived_at"] is None]
    assert [c.id for c in client.v1.customers.list(customer_ids=wanted)] == wanted
    two_aliases = next(
        c for c in tenant.customers if len(c["ingest_aliases"]) == 2 and c["archived_at"] is None
    )
    found = client.v1.customers.list(ingest_alias=two_aliases["ingest_aliases"][1])
    assert [c.id for c in found] == [two_aliases["id"]]


def test_billable_metrics(client, sandbox):
    tenant = sandbox.tenant
    active = [m for m in tenant.billable_metrics if m["archived_at"] is None]
    assert [m.id for m in client.v1.billable_metrics.list(limit=1)] == [m["id"] for m in active]
    everything = list(client.v1.billable_metrics.list(include_archived=True, limit=2))
    assert_wire_equal(everything, tenant.billable_metrics)
    assert [m["name"] for m in active] == ["api_calls", "tokens", "compute_seconds"]
    tokens = client.v1.billable_metrics.retrieve(billable_metric_id=active[1]["id"]).data
    assert (tokens.aggregation_type, tokens.aggregation_key, tokens.event_type_filter.in_values) == (
        "SUM",
        "tokens",
        ["completion"],
    )
    customer_id = tenant.customers[0]["id"]
    assert [m.id for m in client.v1.customers.list_billable_metrics(customer_id=customer_id, limit=2)] == [
        m["id"] for m in active
    ]


def test_usage_hourly_pages_match_truth_without_gaps(client, sandbox):
    tenant = sandbox.tenant
    start, end = ANCHOR - timedelta(days=3), ANCHOR + timedelta(days=1)
    page = client.v1.usage.list(starting_on=start, ending_before=end, window_size="HOUR")
    pages = list(page.iter_pages())
    rows = [row for p in pages for row in p.data]
    truth = tenant.usage_frame("HOUR", start, end)

    assert len(pages) == -(-len(truth) // USAGE_PAGE_SIZE) > 5
    assert pages[-1].next_page is None
    assert_unique([f"{r.customer_id}/{r.billable_metric_id}/{r.start_timestamp}" for r in rows])
    got = pd.DataFrame([r.to_dict() for r in rows])
    assert got["customer_id"].tolist() == truth["customer_id"].tolist()
    assert got["billable_metric_id"].tolist() == truth["billable_metric_id"].tolist()
    assert pd.to_datetime(got["start_timestamp"], utc=True).tolist() == truth["start_timestamp"].tolist()
    assert got["value"].tolist() == truth["value"].tolist()

    # Dense grid: every customer that existed, every metric, every hour that has ended; future hours omitted.
    ended_hours = 3 * 24 + NOW.hour
    expected = sum(
        3 * sum(1 for h in range(ended_hours) if start + timedelta(hours=h + 1) > ts(c["created_at"]))
        for c in tenant.customers
    )
    assert len(rows) == expected
    assert max(r.end_timestamp for r in rows) <= NOW


def test_usage_daily_over_history_equals_hour_sums(client, sandbox):
    tenant = sandbox.tenant
    start = ANCHOR - timedelta(days=SPEC.history_days)
    tokens = next(m["id"] for m in tenant.billable_metrics if m["name"] == "tokens")
    customer_ids = [c["id"] for c in tenant.customers[:10]]
    daily = client.v1.usage.list(
        starting_on=start,
        ending_before=ANCHOR + timedelta(days=1),
        window_size="day",
        customer_ids=customer_ids,
        billable_metrics=[{"id": tokens}],
    )
    rows = list(daily)
    assert {r.billable_metric_name for r in rows} == {"tokens"}
    assert max(r.end_timestamp for r in rows) == ANCHOR  # today's window has not ended yet
    hourly = tenant.usage_frame("HOUR", start, ANCHOR, customer_ids, [tokens])
    hour_sums = hourly.groupby(["customer_id", hourly["start_timestamp"].dt.floor("D")])["value"].sum()
    for row in rows:
        assert row.value == hour_sums[(row.customer_id, pd.Timestamp(row.start_timestamp))]


def test_usage_none_window_is_one_total_per_customer_and_metric(client, sandbox):
    customer_ids = [c["id"] for c in sandbox.tenant.customers[:4]]
    week = {"starting_on": ANCHOR - timedelta(days=7), "ending_before": ANCHOR, "customer_ids": customer_ids}
    totals = list(client.v1.usage.list(window_size="NONE", **week))
    days = pd.DataFrame([r.to_dict() for r in client.v1.usage.list(window_size="DAY", **week)])
    day_sums = days.groupby(["customer_id", "billable_metric_id"])["value"].sum()
    assert len(totals) == len(day_sums)
    assert all(r.value == day_sums[(r.customer_id, r.billable_metric_id)] for r in totals)
    unfinished = client.v1.usage.list(
        window_size="NONE", starting_on=ANCHOR - timedelta(days=7), ending_before=ANCHOR + timedelta(days=1)
    )
    assert unfinished.data == [] and unfinished.next_page is None


def test_concurrent_clients_see_consistent_pages(server, sandbox):
    tenant = sandbox.tenant
    expected = {cid: sorted(i["id"] for i in invoices) for cid, invoices in tenant.invoices.items()}
    with (
        metronome.Metronome(bearer_token="t", base_url=server.url, max_retries=0) as sdk,
        ThreadPoolExecutor(8) as pool,
    ):

        def invoice_ids(customer_id: str) -> list[str]:
            return sorted(i.id for i in sdk.v1.customers.invoices.list(customer_id=customer_id, limit=1))

        got = dict(zip(expected, pool.map(invoice_ids, expected), strict=True))
    assert got == expected


def test_invoices_list_sort_and_retrieve(client, sandbox):
    tenant = sandbox.tenant
    for customer_id, truth in tenant.invoices.items():
        listed = list(client.v1.customers.invoices.list(customer_id=customer_id, sort="date_asc", limit=2))
        assert_wire_equal(listed, sorted(truth, key=lambda i: (i["issued_at"], i["id"])))
    customer_id, truth = next((cid, inv) for cid, inv in tenant.invoices.items() if len(inv) >= 3)
    newest_first = client.v1.customers.invoices.list(
        customer_id=customer_id, sort="date_desc", status="FINALIZED"
    )
    issued = [i.issued_at for i in newest_first]
    assert issued == sorted(issued, reverse=True)
    one = truth[0]
    retrieved = client.v1.customers.invoices.retrieve(customer_id=customer_id, invoice_id=one["id"]).data
    assert_wire_equal([retrieved], [one])
    drafts = [i for invoices in tenant.invoices.values() for i in invoices if i["status"] == "DRAFT"]
    assert drafts and all(ts(i["start_timestamp"]) <= NOW < ts(i["end_timestamp"]) for i in drafts)
    in_period = client.v1.customers.invoices.list(
        customer_id=customer_id, starting_on=ts(truth[1]["start_timestamp"]), ending_before=ANCHOR
    )
    assert all(
        i.status == "FINALIZED" and i.start_timestamp >= ts(truth[1]["start_timestamp"]) for i in in_period
    )


def test_contracts_list_and_get(client, sandbox):
    tenant = sandbox.tenant
    for customer_id, truth in tenant.contracts.items():
        listed = list(client.v2.contracts.list(customer_id=customer_id, include_archived=True, limit=1))
        assert_wire_equal(listed, truth)
        default = [c.id for c in client.v2.contracts.list(customer_id=customer_id)]
        assert default == [c["id"] for c in truth if "archived_at" not in c]
    customer_id, contract = next((cid, c[-1]) for cid, c in tenant.contracts.items() if c[-1]["commits"])
    fetched = client.v2.contracts.retrieve(customer_id=customer_id, contract_id=contract["id"]).data
    assert_wire_equal([fetched], [contract])
    assert fetched.commits[0].balance is None
    with_balance = client.v2.contracts.retrieve(
        customer_id=customer_id, contract_id=contract["id"], include_balance=True, include_ledgers=True
    ).data
    assert with_balance.commits[0].balance is not None and with_balance.commits[0].ledger
    covering = client.v2.contracts.list(customer_id=customer_id, covering_date=NOW)
    assert contract["id"] in [c.id for c in covering]


def test_balances_respect_include_flags(client, sandbox):
    """The documented trap: contract-level balances, balance and ledger each need their own flag."""
    tenant = sandbox.tenant
    seen_contract_level = seen_customer_level = False
    for customer_id, truth in tenant.balances.items():
        full = list(
            client.v1.contracts.list_balances(
                customer_id=customer_id,
                include_balance=True,
                include_contract_balances=True,
                include_ledgers=True,
                limit=1,
            )
        )
        assert_wire_equal(full, truth)
        bare = list(client.v1.contracts.list_balances(customer_id=customer_id))
        assert [b.id for b in bare] == [b["id"] for b in truth if "contract" not in b]
        assert all(b.balance is None and b.ledger is None for b in bare)
        commits = client.v1.customers.commits.list(customer_id=customer_id, include_contract_commits=True)
        credits = client.v1.customers.credits.list(customer_id=customer_id, include_contract_credits=True)
        assert sorted(b.id for b in [*commits, *credits]) == sorted(b["id"] for b in truth)
        seen_contract_level |= any("contract" in b for b in truth)
        seen_customer_level |= any("contract" not in b for b in truth)
    assert seen_contract_level and seen_customer_level


def test_balance_equals_ledger_sum(sandbox):
    for items in sandbox.tenant.balances.values():
        for item in items:
            assert item["balance"] == pytest.approx(
                max(0.0, sum(e["amount"] for e in item["ledger"])), abs=0.02
            )
            assert all(ts(e["timestamp"]) <= NOW for e in item["ledger"])


def test_credit_types(client):
    units = list(client.v1.pricing_units.list(limit=1))
    assert {"id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2", "name": "USD (cents)", "is_currency": True} in [
        u.to_dict() for u in units
    ]


def test_in_process_transport_serves_the_same_api(sandbox):
    http_client = metronome.DefaultHttpxClient(transport=sandbox.transport())
    with metronome.Metronome(
        bearer_token="t",
        base_url="http://sandbox.invalid",
        http_client=http_client,
        _strict_response_validation=True,
    ) as sdk:
        assert len(list(sdk.v1.customers.list())) == sum(
            c["archived_at"] is None for c in sandbox.tenant.customers
        )


# --- errors and faults -------------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401(server):
    response = httpx.get(f"{server.url}/v1/customers")
    assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})
    strict = MetronomeSandbox(build_tenant(SPEC), bearer_token="secret")
    with (
        strict.serve() as locked,
        metronome.Metronome(bearer_token="wrong", base_url=locked.url, max_retries=0) as sdk,
        pytest.raises(metronome.AuthenticationError) as error,
    ):
        sdk.v1.customers.list()
    assert error.value.body == {"message": "Unauthorized"}


@pytest.mark.parametrize(
    "call",
    [
        lambda c, _: c.v1.usage.list(
            starting_on=ANCHOR + timedelta(hours=1),
            ending_before=ANCHOR + timedelta(days=2),
            window_size="DAY",
        ),
        lambda c, _: c.v1.usage.list(starting_on=ANCHOR, ending_before=ANCHOR, window_size="DAY"),
        lambda c, _: c.v1.usage.list(
            starting_on=ANCHOR, ending_before=ANCHOR + timedelta(days=1), window_size="WEEK"
        ),
        lambda c, _: c.v1.customers.list(limit=101),
        lambda c, _: c.v1.customers.list(limit=0),
        lambda c, customer_id: c.v2.contracts.list(customer_id=customer_id, limit=21),
        lambda c, customer_id: c.v1.contracts.list_balances(customer_id=customer_id, limit=26),
        lambda c, customer_id: c.v2.contracts.list(
            customer_id=customer_id, covering_date=NOW, starting_at=NOW
        ),
    ],
    ids=[
        "misaligned",
        "empty-range",
        "window",
        "limit-101",
        "limit-0",
        "contracts-21",
        "balances-26",
        "exclusive",
    ],
)
def test_bad_parameters_are_400_with_message(client, sandbox, call):
    with pytest.raises(metronome.BadRequestError) as error:
        call(client, sandbox.tenant.customers[0]["id"])
    assert set(error.value.body) == {"message"} and error.value.body["message"]


def test_cursor_only_continues_its_own_query(client, server):
    first = client.v1.customers.list(limit=2)
    assert first.next_page
    with pytest.raises(metronome.BadRequestError):
        client.v1.customers.list(limit=2, only_archived=True, next_page=first.next_page)
    response = httpx.post(
        f"{server.url}/v1/usage",
        params={"next_page": first.next_page},
        headers={"Authorization": "Bearer t"},
        json={
            "starting_on": "2026-03-01T00:00:00Z",
            "ending_before": "2026-03-02T00:00:00Z",
            "window_size": "DAY",
        },
    )
    assert response.status_code == 400 and "message" in response.json()


def test_unknown_ids_and_paths_are_404(client, server):
    with pytest.raises(metronome.NotFoundError) as error:
        client.v1.customers.retrieve(customer_id="00000000-0000-0000-0000-000000000000")
    assert "message" in error.value.body
    with pytest.raises(metronome.NotFoundError):
        client.v1.customers.invoices.list(customer_id="nope")
    response = httpx.get(f"{server.url}/v1/nothing-here", headers={"Authorization": "Bearer t"})
    assert (response.status_code, response.json()) == (404, {"message": "Not found"})


def test_429_with_retry_after_is_retried_by_the_sdk(server, sandbox, faults):
    faults.add(r"^/v1/customers$", 429, headers={"Retry-After": "1"})
    before = len(sandbox.requests)
    with metronome.Metronome(bearer_token="t", base_url=server.url, max_retries=1) as sdk:
        started = time.monotonic()
        assert sdk.v1.customers.list(limit=1).data
        waited = time.monotonic() - started
    statuses = [r.status for r in sandbox.requests[before:]]
    assert statuses == [429, 200]
    assert waited >= 0.9  # the header was honoured, not the SDK's ~0.5 s default backoff


def test_429_names_the_rate_limit_type(client, faults):
    faults.add(r"/v1/usage", 429, method="POST", times=2)
    for _ in range(2):
        with pytest.raises(metronome.RateLimitError) as error:
            client.v1.usage.list(
                starting_on=ANCHOR - timedelta(days=1), ending_before=ANCHOR, window_size="DAY"
            )
        assert error.value.response.headers["X-Metronome-Rate-Limit-Type"] == "client"
        assert "retry-after" not in error.value.response.headers
        assert error.value.body == {"message": "Too Many Requests"}
    assert list(
        client.v1.usage.list(starting_on=ANCHOR - timedelta(days=1), ending_before=ANCHOR, window_size="DAY")
    )


def test_injected_fault_with_custom_body_and_method_filter(client, sandbox, faults):
    customer_id = sandbox.tenant.customers[0]["id"]
    faults.add(r"/v2/contracts/list", 503, method="GET", body={"message": "never matches a POST"})
    faults.add(r"/v2/contracts/list", 500, body=b'{"message": "boom"}')
    with pytest.raises(metronome.InternalServerError) as error:
        client.v2.contracts.list(customer_id=customer_id)
    assert error.value.body == {"message": "boom"}
    assert client.v2.contracts.list(customer_id=customer_id).data


# --- the tenant itself -------------------------------------------------------------------------------------------


def tenant_json(tenant) -> str:
    parts = [tenant.customers, tenant.billable_metrics, tenant.contracts, tenant.invoices, tenant.balances]
    return json.dumps([parts, tenant.profiles, tenant.contacts_frame().to_dict("records")], sort_keys=True)


def test_same_spec_builds_identical_tenant():
    first = build_tenant(SPEC)
    tenant_module._build_core.cache_clear()
    second = build_tenant(SPEC)
    assert first._core is not second._core
    assert tenant_json(first) == tenant_json(second)
    assert np.array_equal(first._core.hourly, second._core.hourly)
    assert tenant_json(build_tenant(TenantSpec(seed=8, customers=60, now=NOW))) != tenant_json(first)


def test_profiles_are_all_present_with_roughly_the_planned_shares():
    small = build_tenant(SPEC)
    assert set(small.profiles.values()) == set(PROFILES)
    shares = Counter(build_tenant(TenantSpec(customers=300, now=NOW)).profiles.values())
    assert 0.30 <= shares["steady"] / 300 <= 0.40
    assert 0.03 <= shares["archived"] / 300 <= 0.07


def by_profile(tenant, profile: str) -> list[dict]:
    return [c for c in tenant.customers if tenant.profiles[c["id"]] == profile]


def daily_calls(tenant) -> pd.DataFrame:
    start = ANCHOR - timedelta(days=SPEC.history_days)
    frame = tenant.usage_frame("DAY", start, ANCHOR, billable_metric_ids=[tenant.billable_metrics[0]["id"]])
    frame["days_ago"] = (ANCHOR - frame["start_timestamp"]).dt.days
    return frame


def test_declining_customers_dropped_week_over_week():
    tenant = build_tenant(SPEC)
    calls = daily_calls(tenant)
    last = calls[calls.days_ago.between(1, 7)].groupby("customer_id")["value"].sum()
    prior = calls[calls.days_ago.between(8, 14)].groupby("customer_id")["value"].sum()
    ratio = last / prior
    declining = [c["id"] for c in by_profile(tenant, "declining")]
    assert ratio[declining].between(0.08, 0.57).all()
    assert (ratio[declining] <= 0.3).sum() >= len(declining) // 2
    assert ratio[[c["id"] for c in by_profile(tenant, "steady")]].median() > 0.8


def test_lapsed_customers_stopped_in_each_bucket():
    tenant = build_tenant(SPEC)
    calls = daily_calls(tenant)
    active_days = calls[calls.value > 0].groupby("customer_id")["days_ago"].min()
    lapsed = [c["id"] for c in by_profile(tenant, "lapsed")]
    last_use = [active_days.get(cid) for cid in lapsed]
    assert all(days is None or days > 20 for days in last_use)
    assert any(days is not None and days <= 41 for days in last_use)
    assert any(days is not None and 45 < days <= 121 for days in last_use)
    assert any(days is None for days in last_use)  # lapsed before the 120-day history began


def test_credits_low_customers_are_nearly_used_up_or_burning_out():
    tenant = build_tenant(SPEC)

    def low(item: dict) -> bool:
        active = [
            s
            for s in item["access_schedule"]["schedule_items"]
            if ts(s["starting_at"]) <= NOW < ts(s["ending_before"])
        ]
        if not active:
            return False
        recent = -sum(
            e["amount"]
            for e in item["ledger"]
            if "DEDUCTION" in e["type"] and ts(e["timestamp"]) > ANCHOR - timedelta(days=7)
        )
        used = 1 - item["balance"] / active[0]["amount"]
        return used >= 0.8 or item["balance"] < recent

    for customer_id, profile in tenant.profiles.items():
        assert any(low(item) for item in tenant.balances[customer_id]) == (profile == "credits_low"), profile


def latest_finalized(tenant, customer_id: str) -> dict:
    finalized = [i for i in tenant.invoices[customer_id] if i["status"] == "FINALIZED"]
    return max(finalized, key=lambda i: (i["issued_at"], i["id"]))


def test_payment_failures_on_the_latest_finalized_invoice():
    tenant = build_tenant(SPEC)
    failed = Counter(
        latest_finalized(tenant, c["id"])["external_invoice"]["external_status"]
        for c in by_profile(tenant, "failed_payment")
    )
    assert set(failed) == {"PAYMENT_FAILED", "UNCOLLECTIBLE"}
    for customer in by_profile(tenant, "failed_then_paid"):
        external = latest_finalized(tenant, customer["id"])["external_invoice"]
        assert external["external_status"] == "PAID" and external["billing_provider_error"]
    others = [
        c for c in tenant.customers if tenant.profiles[c["id"]] not in ("failed_payment", "failed_then_paid")
    ]
    assert all(
        i["external_invoice"]["external_status"] in ("PAID", "VOID")
        for c in others
        for i in tenant.invoices[c["id"]]
        if "external_invoice" in i
    )


def current_contract(tenant, customer_id: str) -> dict | None:
    for contract in tenant.contracts[customer_id]:
        end = contract.get("ending_before")
        if (
            "archived_at" not in contract
            and ts(contract["starting_at"]) <= NOW
            and (end is None or ts(end) > NOW)
        ):
            return contract
    return None


def test_renewal_windows_and_recent_renewals():
    tenant = build_tenant(SPEC)
    for customer_id, profile in tenant.profiles.items():
        contract = current_contract(tenant, customer_id)
        days_left = (
            (ts(contract["ending_before"]) - ANCHOR).days
            if contract and "ending_before" in contract
            else None
        )
        if profile == "renewal_7d":
            assert 1 <= days_left <= 7
        elif profile == "renewal_30d":
            assert 8 <= days_left <= 30
        else:
            assert days_left is None or days_left > 30, profile
        renewed = [
            c
            for c in tenant.contracts[customer_id]
            if ANCHOR - timedelta(days=14) <= ts(c["starting_at"]) <= ANCHOR
            and any(t["to_contract_id"] == c["id"] and t["type"] == "RENEWAL" for t in c["transitions"])
        ]
        assert bool(renewed) == (profile == "renewed_recently"), profile
        for contract in renewed:
            old = next(
                c
                for c in tenant.contracts[customer_id]
                if c["id"] == contract["transitions"][0]["from_contract_id"]
            )
            assert old["ending_before"] == contract["starting_at"]
            assert contract["transitions"][0] in old["transitions"]
    evergreen = sum(
        1 for cid in tenant.profiles if (c := current_contract(tenant, cid)) and "ending_before" not in c
    )
    assert 0.15 <= evergreen / len(tenant.profiles) <= 0.4


def test_archived_and_new_customers_have_no_usage_outside_their_life():
    tenant = build_tenant(SPEC)
    hourly = tenant.usage_frame(
        "HOUR", ANCHOR - timedelta(days=SPEC.history_days), ANCHOR + timedelta(days=1)
    )
    for customer in by_profile(tenant, "archived"):
        rows = hourly[hourly.customer_id == customer["id"]]
        assert rows[rows.end_timestamp > ts(customer["archived_at"])]["value"].sum() == 0
    for customer in by_profile(tenant, "new"):
        created = ts(customer["created_at"])
        assert created > ANCHOR - timedelta(days=20)
        rows = hourly[hourly.customer_id == customer["id"]]
        assert rows["end_timestamp"].min() > created  # the dense grid starts once the customer exists
        assert rows[rows.start_timestamp < created]["value"].sum() == 0


def test_customer_attributes_mix():
    tenant = build_tenant(SPEC)
    assert sum(c["custom_fields"].get("do_not_retarget") == "true" for c in tenant.customers) >= 2
    assert sum(len(c["ingest_aliases"]) == 2 for c in tenant.customers) >= 2
    assert all(c["external_id"] == c["ingest_aliases"][0] for c in tenant.customers)


def test_contacts_frame_is_messy_like_a_real_export():
    tenant = build_tenant(TenantSpec(customers=300, now=NOW))
    contacts = tenant.contacts_frame()
    assert list(contacts.columns) == ["customer_id", "person_id", "email", "phone", "marketing_consent"]
    known = {c["id"] for c in tenant.customers}
    assert (~contacts.customer_id.isin(known)).sum() == 2
    assert contacts.person_id.is_unique
    per_customer = contacts[contacts.customer_id.isin(known)].groupby("customer_id").size()
    assert per_customer.min() >= 1 and (per_customer >= 4).sum() >= 3
    assert set(contacts.marketing_consent) == {"true", "false", ""}
    assert 0.1 <= (contacts.marketing_consent == "false").mean() <= 0.2
    assert (contacts.email != contacts.email.str.strip().str.lower()).any()
    assert (~contacts.email.str.contains("@")).any()
    phones = contacts.phone[contacts.phone.str.startswith("+")]
    valid = sum(phonenumbers.is_valid_number(phonenumbers.parse(p)) for p in phones)
    assert valid / len(contacts) > 0.6
    assert {"12", "not-a-phone", ""} <= set(contacts.phone)
    assert contacts.phone.str.startswith("(").any()


# --- ingest ------------------------------------------------------------------------------------------------------


def test_ingested_backdated_events_show_in_usage_once():
    sandbox = MetronomeSandbox(build_tenant(SPEC))  # a fresh overlay, so other tests never see these events
    tenant = sandbox.tenant
    customer = next(c for c in tenant.customers if len(c["ingest_aliases"]) == 2 and c["archived_at"] is None)
    day = ANCHOR - timedelta(days=10)
    before = tenant.usage_frame("DAY", day, day + timedelta(days=1), [customer["id"]]).set_index(
        "billable_metric_name"
    )
    at = (day + timedelta(hours=5)).isoformat()
    events = [
        {"transaction_id": "t1", "customer_id": customer["id"], "event_type": "api_call", "timestamp": at},
        {
            "transaction_id": "t2",
            "customer_id": customer["ingest_aliases"][1],
            "event_type": "api_call",
            "timestamp": at,
        },
        {
            "transaction_id": "t3",
            "customer_id": customer["id"],
            "event_type": "completion",
            "timestamp": at,
            "properties": {"tokens": 1500},
        },
        {"transaction_id": "t1", "customer_id": customer["id"], "event_type": "api_call", "timestamp": at},
        {"transaction_id": "t4", "customer_id": "someone-unknown", "event_type": "api_call", "timestamp": at},
        {"transaction_id": "t5", "customer_id": customer["id"], "event_type": "unmetered", "timestamp": at},
    ]
    http_client = metronome.DefaultHttpxClient(transport=sandbox.transport())
    with metronome.Metronome(
        bearer_token="t", base_url="http://sandbox.invalid", http_client=http_client
    ) as sdk:
        sdk.v1.usage.ingest(usage=events)
        sdk.v1.usage.ingest(usage=events[:3])  # a retried batch must not double count
        after = {
            r.billable_metric_name: r.value
            for r in sdk.v1.usage.list(
                starting_on=day,
                ending_before=day + timedelta(days=1),
                window_size="DAY",
                customer_ids=[customer["id"]],
            )
        }
        with pytest.raises(metronome.BadRequestError) as error:
            too_old = {
                **events[0],
                "transaction_id": "old",
                "timestamp": (NOW - timedelta(days=35)).isoformat(),
            }
            sdk.v1.usage.ingest(usage=[too_old])
        assert "old" in error.value.body["message"]
        with pytest.raises(metronome.BadRequestError):
            sdk.v1.usage.ingest(usage=[{**events[0], "transaction_id": f"n{i}"} for i in range(101)])
    assert after["api_calls"] == before.loc["api_calls", "value"] + 2
    assert after["tokens"] == before.loc["tokens", "value"] + 1500
    assert after["compute_seconds"] == before.loc["compute_seconds", "value"]
    hour = tenant.usage_frame("HOUR", day, day + timedelta(days=1), [customer["id"]])
    assert (
        hour[hour.start_timestamp == day + timedelta(hours=5)]
        .set_index("billable_metric_name")
        .loc["tokens", "value"]
        >= 1500
    )


# --- command line ------------------------------------------------------------------------------------------------


def test_cli_prints_its_url_serves_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "retention_pipeline.sandbox", "metronome", "--port", "0", "--customers", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RETENTION_SANDBOX_NOW": NOW.isoformat()},
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(
            f"{url}/v1/customers", params={"limit": 100}, headers={"Authorization": "Bearer x"}
        )
        assert response.status_code == 200
        expected = build_tenant(TenantSpec(customers=30, now=NOW)).customers
        assert [c["id"] for c in response.json()["data"]] == [
            c["id"] for c in expected if c["archived_at"] is None
        ]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0, process.stderr.read()
