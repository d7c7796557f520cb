/*
table: segments.added_revenue
description: >
  "Added Revenue": revenue from FINALIZED invoices of accounts while they are members of a segment, from entry until
  exit plus the attribution window (RETENTION_ATTRIBUTION_DAYS, default 7), per segment, invoice day and group
  (treated vs holdout). An invoice counts once per segment even across overlapping stays.
materialized: table
metrics: >
  SELECT sum(revenue) FILTER (WHERE cohort = 'treated') AS treated_revenue,
         sum(revenue) FILTER (WHERE cohort = 'holdout') AS holdout_revenue FROM {{ this }}
columns:
  day: UTC day the invoice was issued.
  cohort: treated or holdout.
  revenue: Sum of invoice totals in the credit type's unit (USD is cents).
tests:
  - unique: [segment, day, cohort]
  - accepted_values: {column: cohort, values: [treated, holdout]}
*/
-- Each segment's series of its declared cadence (suppress segments are also evaluated by the other cadences).
WITH changes AS (
    SELECT c.* FROM segments.changes AS c JOIN segments.definitions AS d USING (segment, cadence)
),

stays AS (
    SELECT
        e.segment,
        e.customer_id,
        e.as_of AS entered_at,
        (SELECT min(x.as_of) FROM changes AS x
         WHERE x.segment = e.segment AND x.customer_id = e.customer_id AND x.change = 'exited' AND x.as_of > e.as_of)
            AS exited_at
    FROM changes AS e
    WHERE e.change = 'entered'
),

cohorts AS (
    SELECT segment, customer_id, arg_max(is_holdout, as_of) AS is_holdout
    FROM segments.members
    GROUP BY ALL
),

attributed AS (
    SELECT DISTINCT s.segment, i.invoice_id, i.customer_id, i.issued_at, i.total
    FROM stays AS s
    JOIN staging.stg_invoices AS i
        ON i.customer_id = s.customer_id
        AND i.status = 'FINALIZED'
        AND i.issued_at >= s.entered_at
        AND (s.exited_at IS NULL OR i.issued_at < s.exited_at + to_days(getvariable('attribution_days')))
)

SELECT
    a.segment,
    CAST(a.issued_at AS DATE) AS day,
    CASE WHEN c.is_holdout THEN 'holdout' ELSE 'treated' END AS cohort,
    count(DISTINCT a.customer_id) AS accounts,
    count(*) AS invoices,
    sum(a.total) AS revenue
FROM attributed AS a
JOIN cohorts AS c USING (segment, customer_id)
GROUP BY ALL
