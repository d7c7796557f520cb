/*
description: >
  Accounts overdue for their next active day by their own rhythm (median gap between active days over 90 days), by
  at least one whole gap and min_overdue_days; not yet lapsed into winback. Tier high = value decile 8 or above.
cadence: daily
purpose: target
destinations: [customerio, meta, google, tiktok, pinterest]
exclude: [winback_lapsed_45_120]
holdout_pct: 10
min_size: 0
max_change_pct: 50
params:
  min_overdue_days: 3
  overdue_gaps: 1
  max_idle_days: 44
  high_value_decile: 8
*/
SELECT
    customer_id,
    CASE WHEN value_decile >= {{ high_value_decile }} THEN 'high' ELSE 'low' END AS tier,
    printf('overdue %d days (active every %.1f days)', days_overdue, typical_gap_days) AS reason
FROM features
WHERE days_overdue >= greatest({{ min_overdue_days }}, {{ overdue_gaps }} * typical_gap_days)
    AND days_since_last_usage <= {{ max_idle_days }}
    AND NOT is_archived
