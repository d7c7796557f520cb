/*
description: One row per Metronome customer (account), active or archived, with the flags segments use.
materialized: view
columns:
  customer_id: Metronome customer id.
  name: Customer name in Metronome.
  created_at: When the customer was created in Metronome (UTC).
  archived_at: When the customer was archived (UTC); NULL while active.
  is_archived: True when archived_at is set.
  do_not_retarget: True when the custom field do_not_retarget is "true" (case-insensitive).
tests:
  - unique: customer_id
  - not_null: customer_id
*/
SELECT
    id AS customer_id,
    name,
    external_id,
    ingest_aliases,
    custom_fields,
    created_at,
    archived_at,
    is_archived,
    coalesce(lower(custom_fields ->> 'do_not_retarget') = 'true', false) AS do_not_retarget
FROM raw.metronome_customers
