/*
description: One row per access-schedule segment of a commit or credit (what was granted, when it is usable).
materialized: table
columns:
  balance_type: PREPAID or POSTPAID (commits) or CREDIT.
  segment_id: The schedule item id (ledger entries and webhooks refer to it).
  amount: Amount granted in the segment, in the credit type's unit.
  starting_at: Segment start (UTC, inclusive).
  ending_before: Segment end (UTC, exclusive).
tests:
  - not_null: [balance_id, segment_id]
*/
-- unnest in the SELECT list, not as a lateral join (which DuckDB turns into a hash join on the whole JSON text).
WITH items AS (
    SELECT id AS balance_id, customer_id, contract_id, type AS balance_type, credit_type_id,
        unnest(CAST(schedule_items AS JSON[])) AS item
    FROM raw.metronome_balances
    WHERE archived_at IS NULL
)

SELECT
    balance_id,
    customer_id,
    contract_id,
    balance_type,
    credit_type_id,
    item ->> 'id' AS segment_id,
    CAST(item ->> 'amount' AS DOUBLE) AS amount,
    CAST(item ->> 'starting_at' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS starting_at,
    CAST(item ->> 'ending_before' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS ending_before
FROM items
