/*
table: segments.segment_destination_daily
description: >
  Per segment, UTC day and destination: the people routed to the destination, those with a usable identifier,
  those the destination acknowledged holding, and people sent (acknowledged changes) for the day's partitions, as of
  the day's last sync; plus the matched size the destination platform reports (NULL when it exposes none). Every
  destination that writes sync.coverage or sync.ledger_items appears here without a change to this SQL. Rows exist
  for the segment days of segments.segment_daily_stats (the segment's declared cadence).
materialized: table
metrics: >
  SELECT sum(acknowledged) FILTER (WHERE day = (SELECT max(day) FROM {{ this }})) AS acknowledged_today,
         sum(sent) FILTER (WHERE day = (SELECT max(day) FROM {{ this }})) AS sent_today FROM {{ this }}
columns:
  day: The UTC day the partitions belong to (a partition ending at midnight belongs to the day before).
  cadence: The segment's declared cadence.
  destination: The destination's name as sync.coverage and sync.ledger_items record it.
  people: People routed to the destination at the day's last sync (NULL when no coverage was recorded that day).
  identifiable: People routed with an identifier the destination can use.
  acknowledged: People the destination acknowledged holding after the day's last sync.
  sent: Items the destination acknowledged (adds, updates, removes) in syncs of the day's partitions.
  matched: Matched audience size the destination platform reports; NULL when the platform does not expose one.
  coverage_pct: 100 × identifiable / people; NULL when nobody was routed.
  match_rate_pct: 100 × matched / acknowledged; NULL without a matched size or with nobody acknowledged.
tests:
  - unique: [segment, day, destination]
  - not_null: [segment, day, cadence, destination, sent]
*/
-- Each segment's series of its declared cadence (suppress segments are also evaluated by the other cadences).
WITH parts AS (
    SELECT p.*, CAST(p.as_of - INTERVAL 1 SECOND AS DATE) AS day
    FROM segments.partitions AS p JOIN segments.definitions AS d USING (segment, cadence)
),

last_of_day AS (
    SELECT segment, day, cadence FROM parts
    QUALIFY row_number() OVER (PARTITION BY segment, day ORDER BY as_of DESC) = 1
),

coverage AS (
    SELECT
        segment, destination, CAST(as_of - INTERVAL 1 SECOND AS DATE) AS day,
        people, with_identifier, acknowledged, destination_matched
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
        c.people, c.with_identifier, c.acknowledged, c.destination_matched, coalesce(s.sent_items, 0) AS sent_items
    FROM coverage AS c
    FULL JOIN sent AS s USING (segment, destination, day)
)

SELECT
    l.day,
    l.segment,
    l.cadence,
    d.destination,
    d.people,
    d.with_identifier AS identifiable,
    d.acknowledged,
    d.sent_items AS sent,
    d.destination_matched AS matched,
    100.0 * d.with_identifier / nullif(d.people, 0) AS coverage_pct,
    100.0 * d.destination_matched / nullif(d.acknowledged, 0) AS match_rate_pct
FROM last_of_day AS l
JOIN per_destination AS d USING (segment, day)
