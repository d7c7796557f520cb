/*
description: Still-active accounts whose latest invoice payment failed; fix billing before service is cut.
cadence: hourly
purpose: target
destinations: [customerio]
holdout_pct: 10
min_size: 0
max_change_pct: 50
*/
SELECT
    customer_id,
    'high' AS tier,
    printf('payment failed; usage_7d=%.0f', usage_7d) AS reason
FROM features
WHERE has_failed_payment AND usage_7d > 0
