/*
description: One row per ledger entry of a commit or credit (segment start, invoice deductions, expirations…).
materialized: table
columns:
  entry_type: Metronome ledger entry type, e.g. PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION.
  amount: Signed amount (deductions are negative), in the credit type's unit.
  entry_at: When the entry applies (UTC).
*/
-- unnest in the SELECT list, not as a lateral join (which DuckDB turns into a hash join on the whole JSON text).
WITH entries AS (
    SELECT id AS balance_id, customer_id, type AS balance_type, unnest(CAST(ledger AS JSON[])) AS entry
    FROM raw.metronome_balances
    WHERE archived_at IS NULL
)

SELECT
    balance_id,
    customer_id,
    balance_type,
    entry ->> 'type' AS entry_type,
    entry ->> 'segment_id' AS segment_id,
    CAST(entry ->> 'amount' AS DOUBLE) AS amount,
    CAST(entry ->> 'timestamp' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS entry_at
FROM entries
