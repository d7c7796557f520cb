/*
description: One row per customer × billable metric × UTC day, from Metronome's day windows.
materialized: table
columns:
  day: The UTC day.
  value: The metric's value for the day.
tests:
  - unique: [customer_id, billable_metric_id, day]
  - not_null: [customer_id, billable_metric_id, day]
*/
SELECT
    customer_id,
    billable_metric_id,
    metric_name,
    CAST(window_start AS DATE) AS day,
    value
FROM staging.stg_usage
WHERE window_size = 'DAY'
