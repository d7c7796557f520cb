/*
description: Accounts whose weekly activity fell 40% or more week over week; reach out before they churn.
cadence: daily
purpose: target
destinations: [customerio, meta, google, tiktok, pinterest]
holdout_pct: 10
min_size: 0
max_change_pct: 50
params:
  drop_pct: -40
  high_drop_pct: -70
*/
SELECT
    customer_id,
    CASE WHEN wow_usage_change_pct <= {{ high_drop_pct }} THEN 'high' ELSE 'low' END AS tier,
    printf('wow=%.0f%%', wow_usage_change_pct) AS reason
FROM features
WHERE usage_prior_7d > 0 AND wow_usage_change_pct <= {{ drop_pct }}
