/*
description: >
  Global "Do Not Retarget" suppression for ad platforms: archived accounts, accounts that just renewed or
  upgraded (a new contract started in the last 14 days) and accounts flagged do_not_retarget in Metronome.
cadence: hourly
purpose: suppress
destinations: []
holdout_pct: 0
min_size: 0
max_change_pct: 50
*/
SELECT
    customer_id,
    concat_ws(', ',
        CASE WHEN is_archived THEN 'archived' END,
        CASE WHEN renewed_14d THEN 'renewed in the last 14 days' END,
        CASE WHEN do_not_retarget THEN 'do_not_retarget custom field' END
    ) AS reason
FROM features
WHERE is_archived OR renewed_14d OR do_not_retarget
