/*
description: Renewal within 7 days and activity flat-lining or falling; save the renewal.
cadence: daily
purpose: target
destinations: [customerio, meta, google, tiktok, pinterest]
holdout_pct: 10
min_size: 0
max_change_pct: 50
params:
  renewal_days: 7
  drop_pct: -20
*/
SELECT
    customer_id,
    CASE WHEN usage_7d = 0 THEN 'high' ELSE 'low' END AS tier,
    CASE WHEN usage_7d = 0 THEN printf('renews in %d days; no usage', days_to_renewal)
        ELSE printf('renews in %d days; wow=%.0f%%', days_to_renewal, wow_usage_change_pct) END AS reason
FROM features
WHERE days_to_renewal BETWEEN 0 AND {{ renewal_days }}
    AND (usage_7d = 0 OR wow_usage_change_pct <= {{ drop_pct }})
