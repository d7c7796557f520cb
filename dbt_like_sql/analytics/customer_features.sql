/*
description: >
  Retention signals per customer, as of the end of a partition (stable contract). One row per
  (customer_id, cadence, as_of). Only data before as_of is used, so a backfilled partition gives the same answer.
materialized: table
metrics: >
  SELECT count(*) FILTER (WHERE wow_usage_change_pct <= -40) AS accounts_dropping_40pct,
         count(*) FILTER (WHERE has_failed_payment) AS accounts_failed_payment,
         avg(usage_7d) AS mean_usage_7d FROM {{ this }}
partitioned_by: cadence
cadences: [hourly, daily]
columns:
  customer_id: Metronome customer id.
  cadence: hourly, daily or weekly.
  as_of: End of the partition (UTC); every feature is computed as of this instant.
  usage_7d: Activity metric summed over [as_of - 7 days, as_of).
  usage_prior_7d: Activity metric summed over [as_of - 14 days, as_of - 7 days).
  wow_usage_change_pct: 100 * (usage_7d - usage_prior_7d) / usage_prior_7d; NULL when usage_prior_7d = 0.
  last_usage_at: End of the latest usage window (any metric) with value > 0 ending at or before as_of.
  days_since_last_usage: Whole days from last_usage_at to as_of (floor); NULL when never used.
  contract_id: The contract covering as_of (latest starting_at if several).
  contract_end: That contract's ending_before (exclusive); NULL when evergreen.
  days_to_renewal: Calendar days from the date of as_of to the date of contract_end; NULL when evergreen or none.
  credit_balance: Remaining balance of prepaid commits and credits usable at as_of (credit type unit; USD cents).
  credit_burn_daily: Average daily draw-down over [as_of - 7 days, as_of) from ledger deduction entries.
  days_until_credits_depleted: credit_balance / credit_burn_daily; NULL when the burn is 0 or unknown.
  credit_used_pct: 100 * (granted - remaining) / granted over prepaid commit/credit segments active at as_of.
  has_failed_payment: Latest finalized invoice with a billing-provider invoice is PAYMENT_FAILED or UNCOLLECTIBLE.
  plan_changed_30d: A contract started in [as_of - 30 days, as_of) and it is not the customer's first contract.
  is_archived: The customer was archived at or before as_of.
  renewed_14d: A contract that is not the customer's first started in [as_of - 14 days, as_of) (just renewed or upgraded).
  do_not_retarget: The customer's custom field do_not_retarget is "true".
tests:
  - unique: customer_id
  - not_null: [customer_id, cadence, as_of]
  - accepted_values: {column: cadence, values: [hourly, daily, weekly]}
  - relationships: {column: customer_id, to: staging.stg_customers, field: customer_id}
  - custom:
      name: usage_is_non_negative
      sql: SELECT * FROM {{ this }} WHERE usage_7d < 0 OR usage_prior_7d < 0
*/
WITH params AS (
    SELECT
        getvariable('as_of')::TIMESTAMP AS as_of,
        getvariable('cadence')::VARCHAR AS cadence
),

customers AS (
    SELECT c.customer_id, c.archived_at, c.do_not_retarget
    FROM staging.stg_customers AS c, params AS p
    WHERE c.created_at IS NULL OR c.created_at < p.as_of
),

ranges AS (
    SELECT 'usage_7d' AS range_name, p.as_of - INTERVAL 7 DAY AS lo, p.as_of AS hi FROM params AS p
    UNION ALL
    SELECT 'usage_prior_7d', p.as_of - INTERVAL 14 DAY, p.as_of - INTERVAL 7 DAY FROM params AS p
),

-- A range is covered by whole DAY windows inside it, plus HOUR windows for the days it only partly covers
-- (hourly as_of); each instant is counted once.
recent_activity AS (
    SELECT u.customer_id, u.window_size, u.window_start, u.window_end, u.value
    FROM staging.stg_usage AS u
    JOIN staging.stg_activity_metric AS m USING (billable_metric_id)
    WHERE u.window_start >= (SELECT as_of FROM params) - INTERVAL 14 DAY
        AND u.window_end <= (SELECT as_of FROM params)
),

activity_by_range AS (
    SELECT u.customer_id, r.range_name, sum(u.value) AS value
    FROM recent_activity AS u
    JOIN ranges AS r ON u.window_start >= r.lo AND u.window_end <= r.hi
    WHERE u.window_size = 'DAY'
        OR date_trunc('day', u.window_start) < r.lo
        OR date_trunc('day', u.window_start) + INTERVAL 1 DAY > r.hi
    GROUP BY ALL
),

activity AS (
    SELECT
        customer_id,
        coalesce(sum(value) FILTER (WHERE range_name = 'usage_7d'), 0) AS usage_7d,
        coalesce(sum(value) FILTER (WHERE range_name = 'usage_prior_7d'), 0) AS usage_prior_7d
    FROM activity_by_range
    GROUP BY customer_id
),

last_usage AS (
    SELECT u.customer_id, max(u.window_end) AS last_usage_at
    FROM staging.stg_usage AS u, params AS p
    WHERE u.value > 0 AND u.window_end <= p.as_of
    GROUP BY u.customer_id
),

covering_contract AS (
    SELECT c.customer_id, c.contract_id, c.ending_before AS contract_end
    FROM staging.stg_contracts AS c, params AS p
    WHERE c.starting_at <= p.as_of AND (c.ending_before IS NULL OR p.as_of < c.ending_before)
    QUALIFY row_number() OVER (PARTITION BY c.customer_id ORDER BY c.starting_at DESC, c.contract_id) = 1
),

plan_changes AS (
    SELECT
        c.customer_id,
        bool_or(c.starting_at >= p.as_of - INTERVAL 14 DAY) AS renewed_14d
    FROM staging.stg_contracts AS c, params AS p
    WHERE c.starting_at >= p.as_of - INTERVAL 30 DAY AND c.starting_at < p.as_of AND c.contract_seq > 1
    GROUP BY c.customer_id
),

-- Point-in-time balance of each prepaid commit / credit segment usable at as_of: its ledger entries before
-- as_of, floored at 0 (as Metronome floors `balance`).
active_segments AS (
    SELECT s.customer_id, s.segment_id, s.amount AS granted
    FROM staging.stg_balance_segments AS s, params AS p
    WHERE s.balance_type IN ('PREPAID', 'CREDIT') AND s.starting_at <= p.as_of AND p.as_of < s.ending_before
),

segment_remaining AS (
    SELECT
        a.customer_id,
        a.segment_id,
        a.granted,
        greatest(coalesce(sum(l.amount), 0), 0) AS remaining
    FROM active_segments AS a
    LEFT JOIN staging.stg_balance_ledger AS l
        ON l.segment_id = a.segment_id AND l.entry_at < (SELECT as_of FROM params)
    GROUP BY ALL
),

credits AS (
    SELECT
        customer_id,
        sum(remaining) AS credit_balance,
        sum(granted) AS granted
    FROM segment_remaining
    GROUP BY customer_id
),

burn AS (
    SELECT l.customer_id, -sum(l.amount) / 7.0 AS credit_burn_daily
    FROM staging.stg_balance_ledger AS l, params AS p
    WHERE l.balance_type IN ('PREPAID', 'CREDIT')
        AND l.entry_type LIKE '%AUTOMATED_INVOICE_DEDUCTION'
        AND l.entry_at >= p.as_of - INTERVAL 7 DAY AND l.entry_at < p.as_of
    GROUP BY l.customer_id
),

latest_billed_invoice AS (
    SELECT i.customer_id, i.external_status
    FROM staging.stg_invoices AS i, params AS p
    WHERE i.status = 'FINALIZED' AND i.external_status IS NOT NULL AND i.issued_at < p.as_of
    QUALIFY row_number() OVER (PARTITION BY i.customer_id ORDER BY i.issued_at DESC, i.invoice_id DESC) = 1
)

SELECT
    c.customer_id,
    p.cadence,
    p.as_of,
    coalesce(a.usage_7d, 0) AS usage_7d,
    coalesce(a.usage_prior_7d, 0) AS usage_prior_7d,
    CASE WHEN coalesce(a.usage_prior_7d, 0) <> 0
        THEN 100.0 * (a.usage_7d - a.usage_prior_7d) / a.usage_prior_7d END AS wow_usage_change_pct,
    lu.last_usage_at,
    CAST(floor(date_diff('second', lu.last_usage_at, p.as_of) / 86400.0) AS INTEGER) AS days_since_last_usage,
    cc.contract_id,
    cc.contract_end,
    date_diff('day', CAST(p.as_of AS DATE), CAST(cc.contract_end AS DATE)) AS days_to_renewal,
    coalesce(cr.credit_balance, 0) AS credit_balance,
    coalesce(b.credit_burn_daily, 0) AS credit_burn_daily,
    CASE WHEN b.credit_burn_daily > 0 THEN coalesce(cr.credit_balance, 0) / b.credit_burn_daily END
        AS days_until_credits_depleted,
    CASE WHEN cr.granted > 0 THEN 100.0 * (cr.granted - cr.credit_balance) / cr.granted END AS credit_used_pct,
    coalesce(inv.external_status IN ('PAYMENT_FAILED', 'UNCOLLECTIBLE'), false) AS has_failed_payment,
    pc.customer_id IS NOT NULL AS plan_changed_30d,
    coalesce(c.archived_at <= p.as_of, false) AS is_archived,
    coalesce(pc.renewed_14d, false) AS renewed_14d,
    c.do_not_retarget
FROM customers AS c
CROSS JOIN params AS p
LEFT JOIN activity AS a USING (customer_id)
LEFT JOIN last_usage AS lu USING (customer_id)
LEFT JOIN covering_contract AS cc USING (customer_id)
LEFT JOIN plan_changes AS pc USING (customer_id)
LEFT JOIN credits AS cr USING (customer_id)
LEFT JOIN burn AS b USING (customer_id)
LEFT JOIN latest_billed_invoice AS inv USING (customer_id)
