"""The raw assets' event log (materialization metadata, previews, logs) holds no contact email or phone, even when
a customer's custom fields, ingest aliases and name hold one and the contacts file is full of them."""

from __future__ import annotations

import dagster as dg
import duckdb
from dagster._serdes import serialize_value

from retention_pipeline.definitions import defs
from retention_pipeline.warehouse import resolve_duckdb_path

DAY = "2026-11-18"
RAW = [["raw", "metronome_customers"], ["raw", "metronome_billable_metrics"], ["raw", "metronome_contracts"],
       ["raw", "metronome_invoices"], ["raw", "metronome_balances"], ["raw", "contacts"],
       ["raw", "metronome_usage_daily"]]  # fmt: skip


def spellings(phone: str) -> set[str]:
    digits = "".join(c for c in phone if c.isdigit())
    return {phone, digits, digits[-10:], f"+1{digits[-10:]}"}


def plant_pii(tenant) -> tuple[set[str], set[str]]:
    """Emails and phones in every place a Metronome customer can carry them; returns (emails, phone spellings)."""
    emails, phones = set(), set()
    for i, customer in enumerate(tenant.customers):
        owner, alias, phone = f"owner{i}@pii.example", f"Alias{i}@PII.example", f"(415) 555-{1000 + i}"
        customer["custom_fields"]["billing_contact"] = owner
        customer["custom_fields"]["billing_phone"] = phone
        customer["ingest_aliases"].append(alias)
        if i % 2:
            customer["name"] = f"ceo{i}@pii.example"
            emails.add(customer["name"])
        emails |= {owner, alias.lower()}
        phones |= spellings(phone)
    for i, contracts in enumerate(tenant.contracts.values()):
        for contract in contracts:
            contract["custom_fields"]["signer"] = f"signer{i}@pii.example"
            emails.add(contract["custom_fields"]["signer"])
    return emails, phones


def test_raw_assets_keep_contact_pii_out_of_the_event_log(loopback, tenant, instance, tmp_path, monkeypatch):
    emails, phones = plant_pii(tenant)
    people = tenant.contacts_frame()
    people["email"] = [f"person{i}@pii.example" for i in range(len(people))]
    people["phone"] = [f"+1 415 555 {2000 + i}" for i in range(len(people))]
    emails |= set(people["email"])
    phones |= {spelling for phone in people["phone"] for spelling in spellings(phone)}
    contacts = tmp_path / "contacts.csv"
    people.to_csv(contacts, index=False)
    monkeypatch.setenv("RETENTION_CONTACTS_PATH", str(contacts))
    monkeypatch.setenv("RETENTION_HISTORY_DAYS", "3")

    result = defs.resolve_job_def("daily_retention").execute_in_process(
        partition_key=DAY, asset_selection=[dg.AssetKey(k) for k in RAW], instance=instance
    )

    assert result.success
    with duckdb.connect(str(resolve_duckdb_path()), read_only=True) as con:
        stored = con.execute(
            "SELECT (SELECT count(*) FROM raw.metronome_customers WHERE CAST(custom_fields AS VARCHAR) LIKE "
            "'%@pii.example%'), (SELECT count(*) FROM raw.contacts WHERE email LIKE '%@pii.example')"
        ).fetchone()
    assert (
        stored[0] == len(tenant.customers) and stored[1] > 0
    )  # PII was loaded: the scan below means something
    records = instance.all_logs(result.run_id)
    previews = [
        r.asset_materialization.metadata["preview"]
        for r in records
        if r.asset_materialization and "preview" in r.asset_materialization.metadata
    ]
    assert len(previews) == 5  # one per Metronome snapshot table
    log = "\n".join(serialize_value(r) for r in records).lower()
    assert sorted(e for e in emails if e in log) == [] and "@pii.example" not in log
    assert sorted(p for p in phones if p in log) == []
