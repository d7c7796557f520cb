/*
The churn training set: one row per (t, customer_id) of a customer active at t whose 30-day label is known.
Not a model (the model loader skips dbt_like_sql/ml/): retention_pipeline.models.churn fills two temp tables first and
sets the session variable churn_as_of (the weekly partition's as_of, W):

  churn_features  the analytics.customer_features SQL itself, evaluated once per daily t with as_of = t (every
                  column it has, so a new feature column is picked up without touching this file);
  churn_labels    dbt_like_sql/ml/churn_label.sql for the same (customer_id, t) points, churn_horizon = W.

Point in time: the features at t read only data before t, the label only data in (t, t + 30 d] with t + 30 d <= W,
so a weekly partition trained again later (a backfill) gets the same rows.
*/
SELECT
    getvariable('churn_as_of')::TIMESTAMP AS trained_as_of,
    f.as_of AS t,
    f.* EXCLUDE (cadence, as_of),
    l.churned_30d,
    l.lapsed_30d,
    l.archived_30d,
    l.contract_ended_30d
FROM churn_features AS f
JOIN churn_labels AS l ON l.customer_id = f.customer_id AND l.t = f.as_of
WHERE l.active_at_t AND l.label_known
