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
SELECT
    b.id AS balance_id,
    b.customer_id,
    b.contract_id,
    b.type AS balance_type,
    b.credit_type_id,
    item ->> 'id' AS segment_id,
    CAST(item ->> 'amount' AS DOUBLE) AS amount,
    CAST(item ->> 'starting_at' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS starting_at,
    CAST(item ->> 'ending_before' AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS ending_before
FROM raw.metronome_balances AS b,
    unnest(CAST(b.schedule_items AS JSON[])) AS t(item)
WHERE b.archived_at IS NULL
