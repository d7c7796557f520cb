/*
The 30-day churn label, one row per (customer_id, t) point of the temp table churn_points (t: UTC midnights).
Not a model (the model loader skips dbt_like_sql/ml/): retention_pipeline.models.churn evaluates it for the points it
needs, with the session variable churn_horizon = the instant up to which the data is complete (a weekly training
partition's as_of).

  active_at_t         the customer is not archived at t and used the activity metric (value > 0, DAY or HOUR
                      windows) on at least one UTC day in [t - 14 d, t). Only active customers are labelled, trained
                      on and scored.
  label_known         t + 30 d <= churn_horizon: everything the label looks at has happened.
  lapsed_30d          at t + 30 d the customer has had no activity-metric usage for >= 14 days: none on the days in
                      [t + 16 d, t + 30 d).
  archived_30d        archived in (t, t + 30 d].
  contract_ended_30d  the contract covering t (latest starting_at, as in customer_features) ends in (t, t + 30 d]
                      and no contract covers that end instant (it ended without renewal).
  churned_30d         lapsed_30d OR archived_30d OR contract_ended_30d; NULL unless active_at_t and label_known.

Point in time: active_at_t reads usage and archiving before t; the label reads usage before t + 30 d, archiving in
(t, t + 30 d] and contracts starting at or before the end it checks (<= t + 30 d). Nothing after t + 30 d counts,
so a label never changes once known. The reason columns are NULL while the label is not known.
*/
WITH points AS (
    SELECT DISTINCT customer_id, t, t + INTERVAL 30 DAY AS t_30 FROM churn_points
),

-- UTC days with activity: a DAY window, or any HOUR window of that day, with value > 0.
active_days AS (
    SELECT DISTINCT u.customer_id, CAST(date_trunc('day', u.window_start) AS TIMESTAMP) AS day
    FROM staging.stg_usage AS u
    JOIN staging.stg_activity_metric AS m USING (billable_metric_id)
    WHERE u.value > 0 AND u.window_start >= (SELECT min(t) FROM points) - INTERVAL 14 DAY
        AND u.window_start < (SELECT max(t_30) FROM points)
),

-- The newest active day before t and before t + 30 d (a day d < t is a window that ended by t).
last_active_before_t AS (
    SELECT p.customer_id, p.t, a.day AS last_active_day
    FROM points AS p
    ASOF LEFT JOIN active_days AS a ON p.customer_id = a.customer_id AND p.t > a.day
),

last_active_before_t_30 AS (
    SELECT p.customer_id, p.t, a.day AS last_active_day
    FROM points AS p
    ASOF LEFT JOIN active_days AS a ON p.customer_id = a.customer_id AND p.t_30 > a.day
),

covering_contract AS (
    SELECT p.customer_id, p.t, c.ending_before AS contract_end
    FROM points AS p
    JOIN staging.stg_contracts AS c
        ON c.customer_id = p.customer_id
        AND c.starting_at <= p.t
        AND (c.ending_before IS NULL OR p.t < c.ending_before)
    QUALIFY row_number() OVER (PARTITION BY p.customer_id, p.t ORDER BY c.starting_at DESC, c.contract_id) = 1
),

ended_unrenewed AS (
    SELECT cc.customer_id, cc.t
    FROM covering_contract AS cc
    WHERE cc.contract_end <= cc.t + INTERVAL 30 DAY
        AND NOT EXISTS (
            SELECT 1
            FROM staging.stg_contracts AS n
            WHERE n.customer_id = cc.customer_id
                AND n.starting_at <= cc.contract_end
                AND (n.ending_before IS NULL OR cc.contract_end < n.ending_before)
        )
),

flags AS (
    SELECT
        p.customer_id,
        p.t,
        NOT coalesce(c.archived_at <= p.t, false)
        AND coalesce(before_t.last_active_day >= p.t - INTERVAL 14 DAY, false) AS active_at_t,
        p.t_30 <= getvariable('churn_horizon')::TIMESTAMP AS label_known,
        coalesce(before_t_30.last_active_day < p.t + INTERVAL 16 DAY, true) AS lapsed_30d,
        coalesce(c.archived_at > p.t AND c.archived_at <= p.t_30, false) AS archived_30d,
        e.customer_id IS NOT NULL AS contract_ended_30d
    FROM points AS p
    LEFT JOIN staging.stg_customers AS c ON c.customer_id = p.customer_id
    LEFT JOIN last_active_before_t AS before_t ON before_t.customer_id = p.customer_id AND before_t.t = p.t
    LEFT JOIN last_active_before_t_30 AS before_t_30
        ON before_t_30.customer_id = p.customer_id AND before_t_30.t = p.t
    LEFT JOIN ended_unrenewed AS e ON e.customer_id = p.customer_id AND e.t = p.t
)

SELECT
    customer_id,
    t,
    active_at_t,
    label_known,
    CASE WHEN label_known THEN lapsed_30d END AS lapsed_30d,
    CASE WHEN label_known THEN archived_30d END AS archived_30d,
    CASE WHEN label_known THEN contract_ended_30d END AS contract_ended_30d,
    CASE WHEN active_at_t AND label_known THEN lapsed_30d OR archived_30d OR contract_ended_30d END AS churned_30d
FROM flags
