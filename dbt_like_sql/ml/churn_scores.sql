/*
One row of analytics.churn_scores per customer scored at as_of (daily cadence). Not a model (the model loader skips
dbt_like_sql/ml/): retention_pipeline.models.churn.scoring fills two temp tables and sets the session variables.

  churn_scored         customer_id, p_churn_30d (the calibrated model's probability), annual_value (from
                       customer_features; NULL when unknown)
  churn_contributions  customer_id, feature, delta: how much p drops when that feature alone is replaced by its
                       training median (only deltas >= 0.005, which print as at least +0.01)
  variables            churn_as_of, churn_model_version, churn_high_risk, churn_medium_risk

risk_tier: high when p >= churn_high_risk, medium when p >= churn_medium_risk, else low (monotone in p).
expected_revenue_at_risk = p × annual_value; revenue_at_risk_decile = ceil(10 × cume_dist()) of it within the
partition (10 = most revenue at risk; NULL without an annual value). top_features: the three largest deltas,
"name +0.21; name +0.08; name +0.03".
*/
WITH top_contributions AS (
    SELECT customer_id, feature, delta
    FROM churn_contributions
    WHERE delta >= 0.005
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY delta DESC, feature) <= 3
),

top_features AS (
    SELECT
        customer_id,
        string_agg(feature || ' ' || printf('%+.2f', delta), '; ' ORDER BY delta DESC, feature) AS top_features
    FROM top_contributions
    GROUP BY customer_id
),

at_risk AS (
    SELECT customer_id, p_churn_30d, annual_value, p_churn_30d * annual_value AS expected_revenue_at_risk
    FROM churn_scored
)

SELECT
    r.customer_id,
    'daily' AS cadence,
    getvariable('churn_as_of')::TIMESTAMP AS as_of,
    r.p_churn_30d,
    CASE
        WHEN r.p_churn_30d >= getvariable('churn_high_risk') THEN 'high'
        WHEN r.p_churn_30d >= getvariable('churn_medium_risk') THEN 'medium'
        ELSE 'low'
    END AS risk_tier,
    r.annual_value,
    r.expected_revenue_at_risk,
    CASE WHEN r.expected_revenue_at_risk IS NOT NULL THEN CAST(ceil(10 * cume_dist() OVER (
        PARTITION BY r.expected_revenue_at_risk IS NULL ORDER BY r.expected_revenue_at_risk
    )) AS INTEGER) END AS revenue_at_risk_decile,
    getvariable('churn_model_version')::VARCHAR AS model_version,
    t.top_features
FROM at_risk AS r
LEFT JOIN top_features AS t USING (customer_id)
