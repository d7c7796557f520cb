/*
description: >
  One row per customer × billable metric × usage window (HOUR or DAY), value 0 when Metronome sent null. No tests
  here: raw.metronome_usage's NOT NULL columns and its unique_key check (on every replaced window) already hold.
materialized: view
columns:
  window_size: HOUR or DAY.
  window_start: Inclusive window start (UTC).
  window_end: Exclusive window end (UTC).
  value: Aggregated metric value in the window.
*/
SELECT
    customer_id,
    billable_metric_id,
    billable_metric_name AS metric_name,
    window_size,
    start_timestamp AS window_start,
    end_timestamp AS window_end,
    coalesce(value, 0) AS value
FROM raw.metronome_usage
