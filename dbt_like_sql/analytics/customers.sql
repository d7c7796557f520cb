/*
description: >
  One row per Metronome customer (account), active or archived: who it is, and the contract and plan it is on at
  the newest instant the pipeline has features for. The table to join names and plans onto any feature, segment or
  sync table: every customer_id there is a customer_id here.
materialized: table
columns:
  customer_id: Metronome customer id, the key of analytics.customer_features, segments.* and sync.* tables.
  name: Customer name in Metronome.
  external_id: The customer's id in your own systems (Metronome external_id).
  created_at: When the customer was created in Metronome (UTC).
  archived_at: When the customer was archived (UTC); NULL while active.
  is_archived: True when archived_at is set (as Metronome reports it now).
  do_not_retarget: True when the custom field do_not_retarget is "true" (case-insensitive).
  as_of: >
    The instant "current" means below: the newest as_of in analytics.customer_features (any cadence), so
    contract_id is the contract the features report at that as_of. NULL before features exist.
  contract_id: The live contract covering as_of (starting_at <= as_of < ending_before, or evergreen); the latest
    starting_at if several. NULL when none covers as_of.
  contract_name: That contract's name.
  contract_starting_at: Start of its term (UTC, inclusive).
  contract_ending_before: End of its term (UTC, exclusive); NULL when evergreen.
  contract_seq: 1 when it is the customer's first contract, 2 after one renewal or change, …
  rate_card_id: The contract's rate card.
  plan: The contract's custom field plan_tier (or plan); NULL when it has neither.
tests:
  - unique: customer_id
  - not_null: [customer_id, is_archived]
  - relationships: {column: contract_id, to: staging.stg_contracts, field: contract_id}
    severity: warn
*/
-- "Current" is the newest features instant rather than the wall clock: a pinned sandbox clock or a late run
-- would otherwise make this table disagree with the features it is joined to.
WITH newest AS (
    SELECT max(as_of) AS as_of FROM analytics.customer_features
),

current_contract AS (
    SELECT
        c.customer_id,
        c.contract_id,
        c.contract_name,
        c.starting_at AS contract_starting_at,
        c.ending_before AS contract_ending_before,
        c.contract_seq,
        r.rate_card_id,
        coalesce(r.custom_fields ->> 'plan_tier', r.custom_fields ->> 'plan') AS plan
    FROM staging.stg_contracts AS c
    JOIN raw.metronome_contracts AS r ON r.id = c.contract_id
    CROSS JOIN newest AS n
    WHERE c.starting_at <= n.as_of AND (c.ending_before IS NULL OR n.as_of < c.ending_before)
    QUALIFY row_number() OVER (PARTITION BY c.customer_id ORDER BY c.starting_at DESC, c.contract_id) = 1
)

SELECT
    cu.customer_id,
    cu.name,
    cu.external_id,
    cu.created_at,
    cu.archived_at,
    cu.is_archived,
    cu.do_not_retarget,
    n.as_of,
    cc.contract_id,
    cc.contract_name,
    cc.contract_starting_at,
    cc.contract_ending_before,
    cc.contract_seq,
    cc.rate_card_id,
    cc.plan
FROM staging.stg_customers AS cu
CROSS JOIN newest AS n
LEFT JOIN current_contract AS cc USING (customer_id)
