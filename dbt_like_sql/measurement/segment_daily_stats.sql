/*
table: segments.segment_daily_stats
description: >
  Segment development per UTC day: size at the day's last partition, entries and exits during the day (summed over
  an hourly segment's partitions) and holdout size. Per destination figures (people routed, identifiable,
  acknowledged, sent, matched) are in segments.segment_destination_daily, one row per destination.
materialized: table
metrics: >
  SELECT sum(size_accounts) FILTER (WHERE day = (SELECT max(day) FROM {{ this }})) AS accounts_in_segments_today,
         sum(entries) FILTER (WHERE day = (SELECT max(day) FROM {{ this }})) AS entries_today,
         sum(exits) FILTER (WHERE day = (SELECT max(day) FROM {{ this }})) AS exits_today FROM {{ this }}
columns:
  day: The UTC day the partitions belong to (a partition ending at midnight belongs to the day before).
  size_accounts: Accounts in the segment at the day's last partition.
  entries: Accounts that entered during the day.
  exits: Accounts that left during the day.
  holdout_accounts: Accounts held out at the day's last partition.
tests:
  - unique: [segment, day]
  - not_null: [segment, day]
*/
-- Each segment's series of its declared cadence (suppress segments are also evaluated by the other cadences).
WITH parts AS (
    SELECT p.*, CAST(p.as_of - INTERVAL 1 SECOND AS DATE) AS day
    FROM segments.partitions AS p JOIN segments.definitions AS d USING (segment, cadence)
),

last_of_day AS (
    SELECT * FROM parts QUALIFY row_number() OVER (PARTITION BY segment, day ORDER BY as_of DESC) = 1
),

flows AS (
    SELECT segment, day, sum(entries) AS entries, sum(exits) AS exits FROM parts GROUP BY ALL
)

SELECT
    l.day,
    l.segment,
    l.cadence,
    l.accounts AS size_accounts,
    l.people AS size_people,
    f.entries,
    f.exits,
    l.holdout_accounts
FROM last_of_day AS l
JOIN flows AS f USING (segment, day)
