/*
description: >
  The billable metric that measures activity (one row): RETENTION_ACTIVITY_METRIC when set (by name or id),
  else the tenant's only non-archived metric, else the sandbox default api_calls.
materialized: table
*/
WITH live_metrics AS (
    SELECT id AS billable_metric_id, name AS metric_name
    FROM raw.metronome_billable_metrics
    WHERE archived_at IS NULL
),

choice AS (
    SELECT coalesce(
        getvariable('activity_metric'),
        (SELECT any_value(metric_name) FROM live_metrics HAVING count(*) = 1),
        'api_calls'
    ) AS wanted
)

SELECT billable_metric_id, metric_name
FROM live_metrics, choice
WHERE metric_name = choice.wanted OR billable_metric_id = choice.wanted
