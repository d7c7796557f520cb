/*
description: Prepaid credits nearly gone (a week or less left at the current burn, or 80%+ used); prompt a top-up.
cadence: hourly
purpose: target
destinations: [customerio, meta, google, tiktok, pinterest]
holdout_pct: 10
min_size: 0
max_change_pct: 50
params:
  days_left: 7
  used_pct: 80
  urgent_days_left: 2
  urgent_used_pct: 95
*/
SELECT
    customer_id,
    CASE WHEN days_until_credits_depleted <= {{ urgent_days_left }} OR credit_used_pct >= {{ urgent_used_pct }}
        THEN 'high' ELSE 'low' END AS tier,
    concat_ws(', ',
        CASE WHEN days_until_credits_depleted IS NOT NULL
            THEN printf('%.1f days left', days_until_credits_depleted) END,
        CASE WHEN credit_used_pct IS NOT NULL THEN printf('%.0f%% used', credit_used_pct) END
    ) AS reason
FROM features
WHERE days_until_credits_depleted <= {{ days_left }} OR credit_used_pct >= {{ used_pct }}
