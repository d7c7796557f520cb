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
  revenue_to_date: Sum of `total` of paid invoices issued before as_of (FINALIZED and the billing provider says PAID, or
    the invoice has no billing-provider status); 0 when none. Invoice credit-type unit (USD cents).
  revenue_90d: The same over invoices issued in [as_of - 90 days, as_of).
  contract_value_per_year: Value per year the covering contract states through prepaid commits, the sum over its PREPAID
    commit segments usable at as_of of amount * 365 / segment length in days; NULL when it has none.
  annual_value: coalesce(contract_value_per_year, revenue_90d * 365 / 90), the value used for intent and risk.
  value_decile: ceil(10 * cume_dist()) of annual_value among the tenant's customers at as_of; 10 = most valuable, ties share
    a decile.
  active_days_90d: UTC days in [as_of - 90 days, as_of) with activity-metric usage > 0 (whole DAY windows).
  last_active_day: The latest such day; NULL when none in the 90 days.
  typical_gap_days: Median gap in days between consecutive active days in those 90 days; NULL with fewer than 4 active
    days (too little history for a rhythm).
  expected_next_active_day: last_active_day + ceil(typical_gap_days) days; NULL without a rhythm.
  days_overdue: Days from expected_next_active_day to the date of as_of; negative = not yet due, NULL without a rhythm.
tests:
  - unique: customer_id
  - not_null: [customer_id, cadence, as_of]
  - accepted_values: {column: cadence, values: [hourly, daily, weekly]}
  - relationships: {column: customer_id, to: staging.stg_customers, field: customer_id}
  - custom:
      name: usage_is_non_negative
      sql: SELECT * FROM {{ this }} WHERE usage_7d < 0 OR usage_prior_7d < 0
  - custom:
      name: value_and_rhythm_are_consistent
      sql: >
        SELECT * FROM {{ this }} WHERE value_decile NOT BETWEEN 1 AND 10 OR revenue_90d > revenue_to_date + 0.005
          OR active_days_90d > 90 OR typical_gap_days < 1 OR (typical_gap_days IS NULL) <> (days_overdue IS NULL)
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

-- Value: what the customer has paid, and what its contract commits it to per year.
paid_invoices AS (
    SELECT
        i.customer_id,
        sum(i.total) AS revenue_to_date,
        coalesce(sum(i.total) FILTER (WHERE i.issued_at >= p.as_of - INTERVAL 90 DAY), 0) AS revenue_90d
    FROM staging.stg_invoices AS i, params AS p
    WHERE i.status = 'FINALIZED' AND coalesce(i.external_status, 'PAID') = 'PAID' AND i.issued_at < p.as_of
    GROUP BY i.customer_id
),

contract_value AS (
    SELECT
        s.customer_id,
        sum(s.amount * 365.0 / greatest(date_diff('second', s.starting_at, s.ending_before) / 86400.0, 1))
            AS contract_value_per_year
    FROM staging.stg_balance_segments AS s
    JOIN covering_contract AS cc ON cc.customer_id = s.customer_id AND cc.contract_id = s.contract_id
    CROSS JOIN params AS p
    WHERE s.balance_type = 'PREPAID' AND s.starting_at <= p.as_of AND p.as_of < s.ending_before
    GROUP BY s.customer_id
),

-- Rhythm: the customer's own typical gap between active days over the last 90 whole days, and how overdue it is.
active_days AS (
    SELECT DISTINCT u.customer_id, CAST(u.window_start AS DATE) AS day
    FROM staging.stg_usage AS u
    JOIN staging.stg_activity_metric AS m USING (billable_metric_id)
    CROSS JOIN params AS p
    WHERE u.window_size = 'DAY' AND u.value > 0
        AND u.window_start >= p.as_of - INTERVAL 90 DAY AND u.window_end <= p.as_of
),

gaps AS (
    SELECT customer_id, day, day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS gap
    FROM active_days
),

rhythm AS (
    SELECT *, last_active_day + CAST(ceil(typical_gap_days) AS INTEGER) AS expected_next_active_day
    FROM (
        SELECT
            customer_id,
            count(*) AS active_days_90d,
            max(day) AS last_active_day,
            CAST(CASE WHEN count(*) >= 4 THEN median(gap) END AS DOUBLE) AS typical_gap_days
        FROM gaps
        GROUP BY customer_id
    )
),

value AS (
    SELECT
        c.customer_id,
        coalesce(cv.contract_value_per_year, coalesce(pi.revenue_90d, 0) * 365.0 / 90) AS annual_value
    FROM customers AS c
    LEFT JOIN paid_invoices AS pi USING (customer_id)
    LEFT JOIN contract_value AS cv USING (customer_id)
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
    c.do_not_retarget,
    coalesce(pi.revenue_to_date, 0) AS revenue_to_date,
    coalesce(pi.revenue_90d, 0) AS revenue_90d,
    cv.contract_value_per_year,
    v.annual_value,
    CAST(ceil(10 * cume_dist() OVER (ORDER BY v.annual_value)) AS INTEGER) AS value_decile,
    coalesce(r.active_days_90d, 0) AS active_days_90d,
    r.last_active_day,
    r.typical_gap_days,
    r.expected_next_active_day,
    date_diff('day', r.expected_next_active_day, CAST(p.as_of AS DATE)) AS days_overdue
FROM customers AS c
CROSS JOIN params AS p
LEFT JOIN activity AS a USING (customer_id)
LEFT JOIN last_usage AS lu USING (customer_id)
LEFT JOIN covering_contract AS cc USING (customer_id)
LEFT JOIN plan_changes AS pc USING (customer_id)
LEFT JOIN credits AS cr USING (customer_id)
LEFT JOIN burn AS b USING (customer_id)
LEFT JOIN latest_billed_invoice AS inv USING (customer_id)
LEFT JOIN paid_invoices AS pi USING (customer_id)
LEFT JOIN contract_value AS cv USING (customer_id)
LEFT JOIN rhythm AS r USING (customer_id)
LEFT JOIN value AS v USING (customer_id)
