/*
description: >
  One row per customer × billable metric × UTC day, from Metronome's day windows (a view: nothing to rebuild per
  run, so a daily run's cost does not grow with history).
materialized: view
columns:
  day: The UTC day.
  value: The metric's value for the day.
*/
SELECT
    customer_id,
    billable_metric_id,
    metric_name,
    CAST(window_start AS DATE) AS day,
    value
FROM staging.stg_usage
WHERE window_size = 'DAY'
