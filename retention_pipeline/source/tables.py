"""DDL of the `raw` schema and the SQL that maps each Metronome object (JSON) to its columns.

Raw tables keep Metronome's field names and the whole object in `raw` (JSON), so nothing the API sent is lost and
staging models can rename/type later. Timestamps are naive UTC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RawTable:
    name: str  # schema-qualified
    ddl: str  # column list
    select: str  # SELECT list over `j` (the object as JSON) and `ctx_customer_id` (the customer it was listed for)


USAGE_TABLE = "raw.metronome_usage"
USAGE_DDL = """
    customer_id VARCHAR NOT NULL,
    billable_metric_id VARCHAR NOT NULL,
    billable_metric_name VARCHAR,
    window_size VARCHAR NOT NULL,          -- 'HOUR' or 'DAY'
    start_timestamp TIMESTAMP NOT NULL,    -- inclusive, UTC
    end_timestamp TIMESTAMP NOT NULL,      -- exclusive, UTC
    value DOUBLE,
    extracted_at TIMESTAMP NOT NULL
"""

CUSTOMERS = RawTable(
    "raw.metronome_customers",
    """
    id VARCHAR NOT NULL, external_id VARCHAR, name VARCHAR, ingest_aliases VARCHAR[], custom_fields JSON,
    salesforce_account_id VARCHAR, billable_status VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP,
    archived_at TIMESTAMP, is_archived BOOLEAN NOT NULL, raw JSON NOT NULL, extracted_at TIMESTAMP NOT NULL
    """,
    """
    j->>'id', j->>'external_id', j->>'name', CAST(j->'ingest_aliases' AS VARCHAR[]), j->'custom_fields',
    j->'customer_config'->>'salesforce_account_id', j->'current_billable_status'->>'value',
    utc_ts(j->>'created_at'), utc_ts(j->>'updated_at'), utc_ts(j->>'archived_at'),
    (j->>'archived_at') IS NOT NULL, j
    """,
)

BILLABLE_METRICS = RawTable(
    "raw.metronome_billable_metrics",
    """
    id VARCHAR NOT NULL, name VARCHAR, aggregation_type VARCHAR, aggregation_key VARCHAR,
    event_type_filter JSON, group_keys JSON, property_filters JSON, custom_fields JSON, archived_at TIMESTAMP,
    raw JSON NOT NULL, extracted_at TIMESTAMP NOT NULL
    """,
    """
    j->>'id', j->>'name', j->>'aggregation_type', j->>'aggregation_key', j->'event_type_filter', j->'group_keys',
    j->'property_filters', j->'custom_fields', utc_ts(j->>'archived_at'), j
    """,
)

INVOICES = RawTable(
    "raw.metronome_invoices",
    """
    id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, contract_id VARCHAR, status VARCHAR, type VARCHAR,
    total DOUBLE, subtotal DOUBLE, credit_type_id VARCHAR, credit_type_name VARCHAR,
    start_timestamp TIMESTAMP, end_timestamp TIMESTAMP, issued_at TIMESTAMP,
    billing_provider_type VARCHAR, external_status VARCHAR, external_invoice_id VARCHAR,
    line_items JSON, external_invoice JSON, raw JSON NOT NULL, extracted_at TIMESTAMP NOT NULL
    """,
    """
    j->>'id', coalesce(j->>'customer_id', ctx_customer_id), j->>'contract_id', j->>'status', j->>'type',
    CAST(j->>'total' AS DOUBLE), CAST(j->>'subtotal' AS DOUBLE), j->'credit_type'->>'id', j->'credit_type'->>'name',
    utc_ts(j->>'start_timestamp'), utc_ts(j->>'end_timestamp'), utc_ts(j->>'issued_at'),
    j->'external_invoice'->>'billing_provider_type', j->'external_invoice'->>'external_status',
    j->'external_invoice'->>'invoice_id', j->'line_items', j->'external_invoice', j
    """,
)

CONTRACTS = RawTable(
    "raw.metronome_contracts",
    """
    id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, name VARCHAR, starting_at TIMESTAMP,
    ending_before TIMESTAMP, created_at TIMESTAMP, archived_at TIMESTAMP, rate_card_id VARCHAR, custom_fields JSON,
    transitions JSON, commits JSON, credits JSON, usage_statement_schedule JSON, raw JSON NOT NULL,
    extracted_at TIMESTAMP NOT NULL
    """,
    """
    j->>'id', coalesce(j->>'customer_id', ctx_customer_id), j->>'name', utc_ts(j->>'starting_at'),
    utc_ts(j->>'ending_before'), utc_ts(j->>'created_at'), utc_ts(j->>'archived_at'), j->>'rate_card_id',
    j->'custom_fields', coalesce(j->'transitions', '[]'::JSON), coalesce(j->'commits', '[]'::JSON),
    coalesce(j->'credits', '[]'::JSON), j->'usage_statement_schedule', j
    """,
)

BALANCES = RawTable(
    "raw.metronome_balances",
    """
    id VARCHAR NOT NULL, customer_id VARCHAR NOT NULL, contract_id VARCHAR, type VARCHAR, name VARCHAR,
    product_id VARCHAR, product_name VARCHAR, credit_type_id VARCHAR, credit_type_name VARCHAR, access_type VARCHAR,
    balance DOUBLE, schedule_items JSON, ledger JSON, created_at TIMESTAMP, archived_at TIMESTAMP,
    raw JSON NOT NULL, extracted_at TIMESTAMP NOT NULL
    """,
    """
    j->>'id', ctx_customer_id, j->'contract'->>'id', j->>'type', j->>'name', j->'product'->>'id',
    j->'product'->>'name', j->'access_schedule'->'credit_type'->>'id', j->'access_schedule'->'credit_type'->>'name',
    j->'access_schedule'->>'access_type', CAST(j->>'balance' AS DOUBLE),
    coalesce(j->'access_schedule'->'schedule_items', '[]'::JSON), coalesce(j->'ledger', '[]'::JSON),
    utc_ts(j->>'created_at'), utc_ts(j->>'archived_at'), j
    """,
)

CONTACTS_TABLE = "raw.contacts"
CONTACTS_DDL = """
    customer_id VARCHAR NOT NULL, person_id VARCHAR NOT NULL,
    email VARCHAR,             -- as given (trimmed)
    email_normalized VARCHAR,  -- trimmed + lowercased, NULL when invalid or empty
    phone VARCHAR,             -- as given (trimmed)
    phone_e164 VARCHAR,        -- E.164, NULL when invalid or empty
    marketing_consent BOOLEAN NOT NULL,
    issues VARCHAR[] NOT NULL, -- e.g. invalid_email, invalid_phone, invalid_consent
    source_row INTEGER NOT NULL,
    loaded_at TIMESTAMP NOT NULL
"""
CONTACTS_REJECTED_TABLE = "raw.contacts_rejected"
CONTACTS_REJECTED_DDL = """
    source_row INTEGER NOT NULL, customer_id VARCHAR, person_id VARCHAR, reason VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL
"""

SNAPSHOT_TABLES = (CUSTOMERS, BILLABLE_METRICS, INVOICES, CONTRACTS, BALANCES)


def create_raw_tables(con) -> None:
    """Idempotent: every raw table exists (empty) so downstream SQL can always bind."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table in SNAPSHOT_TABLES:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({table.ddl})")
    con.execute(f"CREATE TABLE IF NOT EXISTS {USAGE_TABLE} ({USAGE_DDL})")
    con.execute(f"CREATE TABLE IF NOT EXISTS {CONTACTS_TABLE} ({CONTACTS_DDL})")
    con.execute(f"CREATE TABLE IF NOT EXISTS {CONTACTS_REJECTED_TABLE} ({CONTACTS_REJECTED_DDL})")
