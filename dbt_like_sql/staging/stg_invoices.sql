/*
description: One row per invoice with its billing period and the billing provider's payment status.
materialized: view
columns:
  status: DRAFT, FINALIZED or VOID (Metronome).
  external_status: The billing provider's status (PAID, PAYMENT_FAILED, UNCOLLECTIBLE, …); NULL without one.
  total: Invoice total in the credit type's unit (USD is cents).
tests:
  - unique: invoice_id
  - not_null: [invoice_id, customer_id]
*/
SELECT
    id AS invoice_id,
    customer_id,
    contract_id,
    status,
    type AS invoice_type,
    total,
    credit_type_id,
    credit_type_name,
    start_timestamp AS period_start,
    end_timestamp AS period_end,
    issued_at,
    billing_provider_type,
    external_status
FROM raw.metronome_invoices
