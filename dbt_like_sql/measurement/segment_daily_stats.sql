/*
table: segments.segment_daily_stats
description: >
  Segment development per UTC day: size at the day's last partition, entries and exits during the day (summed over
  an hourly segment's partitions), holdout size, and per destination the people routed, those with a usable
  identifier, those acknowledged by the destination, and people sent (acknowledged changes) for the day's partitions.
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
),

coverage AS (
    SELECT segment, destination, CAST(as_of - INTERVAL 1 SECOND AS DATE) AS day, people, with_identifier, acknowledged
    FROM sync.coverage
    QUALIFY row_number() OVER (PARTITION BY segment, destination, day ORDER BY as_of DESC, computed_at DESC) = 1
),

-- People (items) a destination acknowledged, attributed to the day of the synced partition.
sent AS (
    SELECT i.segment, i.destination, CAST(left(r.partition_key, 10) AS DATE) AS day, count(*) AS sent_items
    FROM sync.ledger_items AS i
    JOIN sync.runs AS r USING (sync_id)
    WHERE i.status = 'acked'
    GROUP BY ALL
),

per_destination AS (
    SELECT
        coalesce(c.segment, s.segment) AS segment,
        coalesce(c.day, s.day) AS day,
        coalesce(c.destination, s.destination) AS destination,
        c.people, c.with_identifier, c.acknowledged, coalesce(s.sent_items, 0) AS sent_items
    FROM coverage AS c
    FULL JOIN sent AS s USING (segment, destination, day)
)

SELECT
    l.day,
    l.segment,
    l.cadence,
    l.accounts AS size_accounts,
    l.people AS size_people,
    f.entries,
    f.exits,
    l.holdout_accounts,
    max(d.people) FILTER (WHERE d.destination = 'customerio') AS customerio_people,
    max(d.with_identifier) FILTER (WHERE d.destination = 'customerio') AS customerio_identifiable,
    max(d.acknowledged) FILTER (WHERE d.destination = 'customerio') AS customerio_acknowledged,
    coalesce(max(d.sent_items) FILTER (WHERE d.destination = 'customerio'), 0) AS customerio_sent,
    max(d.people) FILTER (WHERE d.destination = 'meta') AS meta_people,
    max(d.with_identifier) FILTER (WHERE d.destination = 'meta') AS meta_identifiable,
    max(d.acknowledged) FILTER (WHERE d.destination = 'meta') AS meta_acknowledged,
    coalesce(max(d.sent_items) FILTER (WHERE d.destination = 'meta'), 0) AS meta_sent,
    max(d.people) FILTER (WHERE d.destination = 'google') AS google_people,
    max(d.with_identifier) FILTER (WHERE d.destination = 'google') AS google_identifiable,
    max(d.acknowledged) FILTER (WHERE d.destination = 'google') AS google_acknowledged,
    coalesce(max(d.sent_items) FILTER (WHERE d.destination = 'google'), 0) AS google_sent
FROM last_of_day AS l
JOIN flows AS f USING (segment, day)
LEFT JOIN per_destination AS d USING (segment, day)
GROUP BY ALL
