/*
description: The most recent customer_features rows of each cadence (what segments and analysts usually want).
materialized: view
*/
SELECT *
FROM analytics.customer_features
QUALIFY as_of = max(as_of) OVER (PARTITION BY cadence)
