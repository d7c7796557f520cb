/*
description: >
  Accounts lapsed 45–120 days (timeboxed winback); never while their payment is failing. Tier high = lapsed
  recently (within recent_days) or valuable (value decile 8 or above): winback spend goes where it pays.
cadence: daily
purpose: target
destinations: [customerio, meta, google, tiktok, pinterest]
exclude: [failed_payment_active]
holdout_pct: 10
min_size: 0
max_change_pct: 50
params:
  min_days: 45
  max_days: 120
  recent_days: 60
  high_value_decile: 8
*/
SELECT
    customer_id,
    CASE WHEN days_since_last_usage <= {{ recent_days }} OR value_decile >= {{ high_value_decile }} THEN 'high'
        ELSE 'low' END AS tier,
    printf('lapsed %d days', days_since_last_usage) AS reason
FROM features
WHERE days_since_last_usage BETWEEN {{ min_days }} AND {{ max_days }}
