"""One person listed under several accounts: one profile and one audience member per destination, attributed by the
documented identity rule, and re-runs that send nothing."""

from datetime import UTC, datetime

import duckdb
import pandas as pd

from retention_pipeline.definitions import defs
from retention_pipeline.sandbox.metronome.tenant import TenantSpec, build_tenant
from retention_pipeline.warehouse import resolve_duckdb_path

DAY = "2026-11-19"


def db(sql, params=None):
    with duckdb.connect(str(resolve_duckdb_path())) as con:
        return con.execute(sql, params or []).fetchall()


def run_daily():
    result = defs.resolve_job_def("daily_retention").execute_in_process(
        partition_key=DAY, raise_on_error=False
    )
    assert result.success
    return result


def sends(*sandboxes) -> int:
    return sum(1 for s in sandboxes for r in s.requests if r.method != "GET")


def test_people_in_two_accounts_sync_once_and_reruns_send_nothing(destinations, monkeypatch, tmp_path):
    cio, meta, google, tiktok, pinterest, routing = destinations
    everywhere = (cio, meta, google, tiktok, pinterest)
    # Every person of a declining account (the usage_drop_wow pattern) is also listed under the next declining
    # account and under one account outside the pattern.
    spec = TenantSpec(seed=42, customers=60, now=datetime(2026, 11, 20, 10, 30, tzinfo=UTC))
    tenant = build_tenant(spec)
    contacts = tenant.contacts_frame()
    declining = sorted(c for c, profile in tenant.profiles.items() if profile == "declining")
    outside = sorted(c for c, profile in tenant.profiles.items() if profile == "steady")[0]
    extra = []
    for account, other in zip(declining, declining[1:] + declining[:1], strict=True):
        people = contacts[contacts.customer_id == account].assign(marketing_consent="true")
        extra += [people.assign(customer_id=other), people.assign(customer_id=outside)]
    rows = pd.concat([contacts, *extra]).drop_duplicates(["customer_id", "person_id"], keep="last")
    rows.to_csv(tmp_path / "contacts.csv", index=False)
    monkeypatch.setenv("RETENTION_CONTACTS_PATH", str(tmp_path / "contacts.csv"))

    run_daily()
    first = sends(*everywhere)
    shared = db("SELECT person_id FROM raw.contacts GROUP BY 1 HAVING count(*) > 1")
    in_segment = db(
        """SELECT count(DISTINCT person_id) FROM segments.members WHERE segment = 'usage_drop_wow'
        AND person_id IN (SELECT person_id FROM raw.contacts GROUP BY 1 HAVING count(DISTINCT customer_id) > 2)"""
    )[0][0]
    assert len(shared) > 10 and in_segment > 0  # the case is exercised
    state = db(
        "SELECT count(*), count(DISTINCT (segment, destination, member_key)) FROM sync.destination_state"
    )
    assert state[0][0] == state[0][1] > 0
    for _ in range(2):
        run_daily()
        assert sends(*everywhere) == first  # nothing changed → zero requests, however often it runs
    assert db("SELECT count(*) FROM sync.destination_state") == [(state[0][0],)]

    # The identity rule, recomputed here from the members: attributed to the 'high' account, else the smallest id;
    # a person with a held-out member account is not sent at all.
    members = db("SELECT person_id, customer_id, tier, is_holdout FROM segments.members "
                 "WHERE segment = 'usage_drop_wow' AND person_id IS NOT NULL")  # fmt: skip
    by_person: dict[str, list] = {}
    for person, customer, tier, held_out in members:
        by_person.setdefault(person, []).append((tier != "high", customer, held_out))
    acknowledged = dict(db("SELECT member_key, customer_id FROM sync.destination_state "
                           "WHERE segment = 'usage_drop_wow' AND destination = 'customerio'"))  # fmt: skip
    for person, accounts in by_person.items():
        if any(held_out for *_, held_out in accounts):
            assert person not in acknowledged
            continue
        primary = min(accounts)[1]
        assert acknowledged[person] == primary
        assert cio.person(id=person)["attributes"]["rp_usage_drop_wow_account"] == primary
        # Profile features come from the home account (the smallest of all the person's ids).
        home = db("SELECT min(customer_id) FROM raw.contacts WHERE person_id = ?", [person])[0][0]
        usage = db(
            "SELECT usage_7d FROM analytics.customer_features WHERE customer_id = ? AND cadence = 'daily'",
            [home],
        )
        assert cio.person(id=person)["attributes"].get("rp_usage_7d") == (usage[0][0] if usage else None)
