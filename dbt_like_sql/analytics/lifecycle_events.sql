/*
description: >
  Metronome lifecycle moments derived from contracts and balances, because Metronome's offset notifications never
  backfill: contract.end at -30, -7 and 0 days, and the end of every commit and credit segment (at -7 and 0 days).
  One row per (source object, event_type, offset); fires_at = source_timestamp + offset.
materialized: table
columns:
  event_type: contract.end, commit.segment.end or credit.segment.end (Metronome's notification names).
  offset_duration: ISO-8601 offset like Metronome's (-P30D, -P7D, P0D).
  source_id: The contract id, or the commit/credit segment id.
  source_timestamp: When the underlying moment happens (contract ending_before, segment ending_before).
  fires_at: source_timestamp + offset (UTC).
tests:
  - unique: [source_id, event_type, offset_duration]
  - not_null: [customer_id, event_type, fires_at]
  - accepted_values: {column: event_type, values: [contract.end, commit.segment.end, credit.segment.end]}
*/
WITH offsets AS (
    SELECT * FROM (VALUES ('-P30D', -30), ('-P7D', -7), ('P0D', 0)) AS t(offset_duration, offset_days)
),

contract_ends AS (
    SELECT customer_id, contract_id, 'contract.end' AS event_type, contract_id AS source_id,
        ending_before AS source_timestamp
    FROM staging.stg_contracts
    WHERE ending_before IS NOT NULL
),

segment_ends AS (
    SELECT customer_id, contract_id,
        CASE WHEN balance_type = 'CREDIT' THEN 'credit.segment.end' ELSE 'commit.segment.end' END AS event_type,
        segment_id AS source_id, ending_before AS source_timestamp
    FROM staging.stg_balance_segments
    WHERE ending_before IS NOT NULL
)

SELECT e.customer_id, e.contract_id, e.event_type, o.offset_duration, e.source_id, e.source_timestamp,
    e.source_timestamp + to_days(o.offset_days) AS fires_at
FROM contract_ends AS e CROSS JOIN offsets AS o
UNION ALL
SELECT e.customer_id, e.contract_id, e.event_type, o.offset_duration, e.source_id, e.source_timestamp,
    e.source_timestamp + to_days(o.offset_days) AS fires_at
FROM segment_ends AS e JOIN offsets AS o ON o.offset_days IN (-7, 0)
