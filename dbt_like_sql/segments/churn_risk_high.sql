/*
description: >
  Active accounts the churn model rates likely to churn within 30 days (calibrated p_churn_30d), with value at stake;
  tier high = the top decile of expected revenue at risk (p × annual value) among every scored account. Skipped
  while no model has been trained.
cadence: daily
purpose: target
destinations: [customerio, meta, google, tiktok, pinterest]
exclude: [failed_payment_active]
holdout_pct: 10
min_size: 0
max_change_pct: 50
params:
  min_p: 0.3
  max_idle_days: 13
  high_risk_decile: 10
*/
SELECT
    f.customer_id,
    CASE WHEN s.revenue_at_risk_decile >= {{ high_risk_decile }} THEN 'high' ELSE 'low' END AS tier,
    printf('p=%.2f, %.0f at risk', s.p_churn_30d, s.expected_revenue_at_risk) AS reason
FROM features AS f
JOIN analytics.churn_scores AS s ON s.customer_id = f.customer_id AND s.cadence = f.cadence AND s.as_of = f.as_of
WHERE s.p_churn_30d >= {{ min_p }}
    AND f.annual_value > 0
    AND f.days_since_last_usage <= {{ max_idle_days }}
    AND NOT f.is_archived
