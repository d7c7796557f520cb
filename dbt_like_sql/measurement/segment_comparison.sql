/*
table: segments.segment_comparison
description: >
  Does the churn model's segment beat the threshold rules? Every target segment compared with the others of its
  cadence on the same entry window and the same outcome. Window, the entries (on the segment's declared cadence) from
  the first day on which every target segment of that cadence was being computed (so a segment that started later,
  like churn_risk_high, is compared only on its own days) whose 30 days have elapsed within the usage data. Outcome, churn within 30 days of entering, as the churn
  model's label defines it (lapsed, i.e. no activity-metric usage in [entry + 16 d, entry + 30 d); archived; or the
  contract covering the entry ended without a successor). holdout_churn_rate is how many of the accounts a segment
  picks churn when left alone (targeting, 95% Wilson interval); churn_prevented = holdout − treated churn rate (the
  activation's effect, 95% normal-approximation interval).
materialized: table
show: >
  SELECT segment, cadence, window_start, entries, holdout_n, holdout_churn_rate, holdout_ci_low, holdout_ci_high,
         treated_churn_rate, churn_prevented, ci_low, ci_high FROM {{ this }}
  ORDER BY cadence, holdout_churn_rate DESC NULLS LAST, segment
metrics: >
  SELECT max(window_start) IS NOT NULL AS has_window, sum(entries) AS compared_entries FROM {{ this }}
columns:
  segment: A target segment.
  cadence: The segment's declared cadence; segments are compared with the others of the same cadence.
  window_start: First entry day compared (the day every target segment of the cadence had a partition).
  entries: Entries in the window whose 30-day outcome is known.
  treated_n: Treated entries among them; treated_churn_rate their churn rate.
  holdout_n: Held-out entries; holdout_churn_rate their churn rate (the segment's precision without treatment).
  holdout_ci_low: Lower bound of the 95% Wilson interval of holdout_churn_rate (holdout_ci_high the upper).
  churn_prevented: holdout_churn_rate - treated_churn_rate; ci_low/ci_high its 95% interval (NULL when a group is empty).
tests:
  - unique: segment
*/
WITH targets AS (
    SELECT segment, cadence FROM segments.definitions WHERE purpose = 'target'
),

data_end AS (
    SELECT CAST(max(window_start) AS DATE) + 1 AS day FROM staging.stg_usage WHERE window_size = 'DAY'
),

-- Per cadence, the comparison starts when the last segment of that cadence to appear had its first partition (an
-- hourly series is kept for fewer days than a daily one, so each is compared with its own cadence).
window_start AS (
    SELECT cadence, max(first_as_of) AS as_of
    FROM (
        SELECT p.segment, p.cadence, min(p.as_of) AS first_as_of
        FROM segments.partitions AS p JOIN targets AS t USING (segment, cadence)
        GROUP BY p.segment, p.cadence
    )
    GROUP BY cadence
),

entries AS (
    SELECT e.segment, e.customer_id, e.as_of AS entered_at, m.is_holdout
    FROM segments.changes AS e
    JOIN targets AS t USING (segment, cadence)
    JOIN window_start AS w USING (cadence)
    JOIN (SELECT segment, customer_id, arg_max(is_holdout, as_of) AS is_holdout FROM segments.members GROUP BY ALL)
        AS m USING (segment, customer_id)
    WHERE e.change = 'entered'
        AND e.as_of >= w.as_of
        AND e.as_of + INTERVAL 30 DAY <= (SELECT day FROM data_end)
),

-- As dbt_like_sql/ml/churn_label.sql counts them: a UTC day with a DAY or any HOUR window of the metric > 0.
active_days AS (
    SELECT DISTINCT u.customer_id, CAST(u.window_start AS DATE) AS day
    FROM staging.stg_usage AS u
    JOIN staging.stg_activity_metric USING (billable_metric_id)
    WHERE u.value > 0 AND u.customer_id IN (SELECT customer_id FROM entries)
),

-- The contract covering the entry instant (the latest starting_at, as customer_features and the label pick it).
covering AS (
    SELECT e.segment, e.customer_id, e.entered_at, k.ending_before
    FROM entries AS e
    JOIN staging.stg_contracts AS k
        ON k.customer_id = e.customer_id AND k.starting_at <= e.entered_at
        AND (k.ending_before IS NULL OR e.entered_at < k.ending_before)
    QUALIFY row_number() OVER (
        PARTITION BY e.segment, e.customer_id, e.entered_at ORDER BY k.starting_at DESC, k.contract_id
    ) = 1
),

outcomes AS (
    SELECT
        e.*,
        NOT EXISTS (
            SELECT 1 FROM active_days AS a
            WHERE a.customer_id = e.customer_id
                AND a.day >= CAST(e.entered_at + INTERVAL 16 DAY AS DATE)
                AND a.day < CAST(e.entered_at + INTERVAL 30 DAY AS DATE)
        )
        OR EXISTS (
            SELECT 1 FROM staging.stg_customers AS c
            WHERE c.customer_id = e.customer_id
                AND c.archived_at > e.entered_at AND c.archived_at <= e.entered_at + INTERVAL 30 DAY
        )
        OR EXISTS (
            SELECT 1 FROM covering AS k
            WHERE k.segment = e.segment AND k.customer_id = e.customer_id AND k.entered_at = e.entered_at
                AND k.ending_before <= e.entered_at + INTERVAL 30 DAY
                AND NOT EXISTS (
                    SELECT 1 FROM staging.stg_contracts AS n
                    WHERE n.customer_id = k.customer_id AND n.starting_at <= k.ending_before
                        AND (n.ending_before IS NULL OR n.ending_before > k.ending_before)
                )
        ) AS churned
    FROM entries AS e
),

rates AS (
    SELECT
        t.segment,
        t.cadence,
        count(o.customer_id) AS entries,
        count(*) FILTER (WHERE NOT o.is_holdout) AS treated_n,
        avg(CAST(o.churned AS INTEGER)) FILTER (WHERE NOT o.is_holdout) AS treated_churn_rate,
        count(*) FILTER (WHERE o.is_holdout) AS holdout_n,
        avg(CAST(o.churned AS INTEGER)) FILTER (WHERE o.is_holdout) AS holdout_churn_rate
    FROM targets AS t
    LEFT JOIN outcomes AS o USING (segment)
    GROUP BY t.segment, t.cadence
)

SELECT
    r.segment,
    r.cadence,
    CAST(w.as_of AS DATE) AS window_start,
    entries,
    treated_n,
    treated_churn_rate,
    holdout_n,
    holdout_churn_rate,
    (holdout_churn_rate + 1.9208 / holdout_n
        - 1.96 * sqrt(holdout_churn_rate * (1 - holdout_churn_rate) / holdout_n + 0.9604 / holdout_n ^ 2))
        / (1 + 3.8416 / holdout_n) AS holdout_ci_low,
    (holdout_churn_rate + 1.9208 / holdout_n
        + 1.96 * sqrt(holdout_churn_rate * (1 - holdout_churn_rate) / holdout_n + 0.9604 / holdout_n ^ 2))
        / (1 + 3.8416 / holdout_n) AS holdout_ci_high,
    holdout_churn_rate - treated_churn_rate AS churn_prevented,
    holdout_churn_rate - treated_churn_rate - 1.96 * sqrt(
        treated_churn_rate * (1 - treated_churn_rate) / treated_n
        + holdout_churn_rate * (1 - holdout_churn_rate) / holdout_n
    ) AS ci_low,
    holdout_churn_rate - treated_churn_rate + 1.96 * sqrt(
        treated_churn_rate * (1 - treated_churn_rate) / treated_n
        + holdout_churn_rate * (1 - holdout_churn_rate) / holdout_n
    ) AS ci_high
FROM rates AS r
LEFT JOIN window_start AS w USING (cadence)
