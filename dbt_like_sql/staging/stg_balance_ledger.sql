/*
description: One row per ledger entry of a commit or credit (segment start, invoice deductions, expirations…).
materialized: table
columns:
  entry_type: Metronome ledger entry type, e.g. PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION.
  amount: Signed amount (deductions are negative), in the credit type's unit.
  entry_at: When the entry applies (UTC).
*/
SELECT
    b.id AS balance_id,
    b.customer_id,
    b.type AS balance_type,
    entry ->> 'type' AS entry_type,
    entry ->> 'segment_id' AS segment_id,
    CAST(entry ->> 'amount' AS DOUBLE) AS amount,
    CAST(entry ->> 'timestamp' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS entry_at
FROM raw.metronome_balances AS b,
    unnest(CAST(b.ledger AS JSON[])) AS t(entry)
WHERE b.archived_at IS NULL
