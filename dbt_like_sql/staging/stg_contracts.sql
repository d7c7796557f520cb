/*
description: One row per live (non-archived) contract with its term; ending_before is exclusive, NULL = evergreen.
materialized: view
columns:
  contract_id: Metronome contract id.
  starting_at: Start of the term (UTC, inclusive).
  ending_before: End of the term (UTC, exclusive); NULL for evergreen contracts.
  contract_seq: 1 for the customer's first contract (by starting_at), 2 for the next, …
tests:
  - unique: contract_id
  - not_null: [contract_id, customer_id, starting_at]
  - relationships: {column: customer_id, to: staging.stg_customers, field: customer_id}
*/
SELECT
    id AS contract_id,
    customer_id,
    name AS contract_name,
    starting_at,
    ending_before,
    transitions,
    row_number() OVER (PARTITION BY customer_id ORDER BY starting_at, id) AS contract_seq
FROM raw.metronome_contracts
WHERE archived_at IS NULL
