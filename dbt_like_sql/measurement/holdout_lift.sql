/*
table: segments.holdout_lift
description: >
  Does a segment's activation work? Per segment and outcome, the share of treated vs holdout accounts reaching the
  outcome within RETENTION_LIFT_WINDOW_DAYS (default 14) of entering, the difference (lift) and a 95%
  normal-approximation interval. Outcomes: active_again = the activity metric's trailing-7-day usage rises above its
  level at entry (day resolution); renewed (segments named renewal_*) = a new, non-first contract starts in the
  window. Only entries whose window has fully elapsed (within the usage data) count.
materialized: table
metrics: >
  SELECT avg(lift) FILTER (WHERE outcome = 'active_again') AS mean_lift_active_again,
         sum(treated_n + holdout_n) AS measured_entries FROM {{ this }}
columns:
  outcome: active_again or renewed.
  lift: treated_rate - holdout_rate.
  ci_low: Lower bound of the 95% interval of the lift (NULL when a group is empty).
tests:
  - unique: [segment, outcome]
*/
WITH entries AS (
    SELECT e.segment, e.customer_id, e.as_of AS entered_at, CAST(e.as_of AS DATE) AS entry_day, c.is_holdout
    FROM segments.changes AS e
    JOIN segments.definitions AS d USING (segment, cadence)  -- the series of the segment's declared cadence
    JOIN (SELECT segment, customer_id, arg_max(is_holdout, as_of) AS is_holdout FROM segments.members GROUP BY ALL)
        AS c USING (segment, customer_id)
    WHERE e.change = 'entered'
),

-- Only the entered accounts, from a week before the first entry: the cost follows segment entries, not history.
activity AS (
    SELECT u.customer_id, u.day, sum(u.value) AS value
    FROM analytics.usage_daily AS u
    JOIN staging.stg_activity_metric USING (billable_metric_id)
    WHERE u.customer_id IN (SELECT customer_id FROM entries)
        AND u.day >= (SELECT min(entry_day) FROM entries) - 7
    GROUP BY ALL
),

-- usage_7d over [window_end - 7 days, window_end)
rolling_usage AS (
    SELECT
        customer_id,
        day + 1 AS window_end,
        sum(value) OVER (PARTITION BY customer_id ORDER BY day RANGE BETWEEN INTERVAL 6 DAY PRECEDING AND CURRENT ROW)
            AS usage_7d
    FROM activity
),

matured AS (
    SELECT e.*
    FROM entries AS e
    WHERE e.entry_day + getvariable('lift_window_days')
        <= (SELECT CAST(max(window_start) AS DATE) + 1 FROM staging.stg_usage WHERE window_size = 'DAY')
),

measured AS (
    SELECT
        m.*,
        coalesce(at_entry.usage_7d, 0) AS usage_at_entry,
        coalesce(
            (SELECT max(t.usage_7d) FROM rolling_usage AS t
             WHERE t.customer_id = m.customer_id AND t.window_end > m.entry_day
                AND t.window_end <= m.entry_day + getvariable('lift_window_days')),
            0
        ) AS best_after,
        EXISTS (
            SELECT 1 FROM staging.stg_contracts AS k
            WHERE k.customer_id = m.customer_id AND k.contract_seq > 1 AND k.starting_at > m.entered_at
                AND k.starting_at <= m.entered_at + to_days(getvariable('lift_window_days'))
        ) AS renewed
    FROM matured AS m
    LEFT JOIN rolling_usage AS at_entry ON at_entry.customer_id = m.customer_id AND at_entry.window_end = m.entry_day
),

outcomes AS (
    SELECT segment, 'active_again' AS outcome, is_holdout, best_after > usage_at_entry AS success FROM measured
    UNION ALL
    SELECT segment, 'renewed', is_holdout, renewed FROM measured WHERE segment LIKE 'renewal%'
),

rates AS (
    SELECT
        segment,
        outcome,
        count(*) FILTER (WHERE NOT is_holdout) AS treated_n,
        avg(CAST(success AS INTEGER)) FILTER (WHERE NOT is_holdout) AS treated_rate,
        count(*) FILTER (WHERE is_holdout) AS holdout_n,
        avg(CAST(success AS INTEGER)) FILTER (WHERE is_holdout) AS holdout_rate
    FROM outcomes
    GROUP BY ALL
)

SELECT
    segment,
    outcome,
    treated_n,
    treated_rate,
    holdout_n,
    holdout_rate,
    treated_rate - holdout_rate AS lift,
    treated_rate - holdout_rate - 1.96 * sqrt(
        treated_rate * (1 - treated_rate) / treated_n + holdout_rate * (1 - holdout_rate) / holdout_n
    ) AS ci_low,
    treated_rate - holdout_rate + 1.96 * sqrt(
        treated_rate * (1 - treated_rate) / treated_n + holdout_rate * (1 - holdout_rate) / holdout_n
    ) AS ci_high
FROM rates
