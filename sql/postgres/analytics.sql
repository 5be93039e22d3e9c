-- The analytics follower's statements and the analytics answers' reads
-- (SPEC section 7) on PostgreSQL. A block runs from its "-- name:" line to the
-- next one. Migration 4 says why a round reads only up to the horizon.

-- name: followHorizon
-- Its own transaction, before a round: the round's snapshot sees what it promoted.
SELECT watchtime_follow_horizon();

-- name: followLock
-- One follower at a time across servers, held until the round commits; a
-- rebuild's swap takes it too, to reset the analytics with no round under way.
SELECT pg_try_advisory_xact_lock(7477003) AS mine;

-- name: followState
SELECT analytics_seq AS cursor, follow_horizon AS horizon, accounting, max_step AS "maxStep" FROM settings WHERE id = 1;

-- name: eventsAfter
SELECT seq, user_id AS "userId", movie_id AS "movieId", at, received_at AS "receivedAt"
FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3;

-- name: pairStates
SELECT p.user_id AS "userId", p.movie_id AS "movieId", p.position, p.watched, p.coverage, p.furthest, p.intervals,
  p.last_received_at AS "lastReceivedAt", p.last_credited_at AS "lastCreditedAt"
FROM unnest($1::bigint[], $2::bigint[]) AS k(u, m) JOIN pair_coverage p ON p.user_id = k.u AND p.movie_id = k.m;

-- name: writeRound
-- A round's rows as arrays, and the cursor, in one statement. Each bucket's
-- users new to it (inserted, not met) add a viewer to its series row.
WITH pairs AS (
  INSERT INTO pair_coverage AS p (user_id, movie_id, position, watched, coverage, furthest, intervals, last_received_at, last_credited_at)
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::bigint[], $6::int[], $7::bytea[], $8::bigint[], $9::bigint[])
  ON CONFLICT (movie_id, user_id) DO UPDATE SET position = excluded.position, watched = excluded.watched,
    coverage = excluded.coverage, furthest = excluded.furthest, intervals = excluded.intervals,
    last_received_at = excluded.last_received_at, last_credited_at = excluded.last_credited_at
), movies AS (
  INSERT INTO movie_coverage AS c (movie_id, viewers, coverage, watched, events, max_at)
  SELECT * FROM unnest($10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::int[])
  ON CONFLICT (movie_id) DO UPDATE SET viewers = c.viewers + excluded.viewers, coverage = c.coverage + excluded.coverage,
    watched = c.watched + excluded.watched, events = c.events + excluded.events, max_at = greatest(c.max_at, excluded.max_at)
), retention AS (
  INSERT INTO retention_changes AS r (movie_id, second, delta)
  SELECT * FROM unnest($16::bigint[], $17::int[], $18::bigint[])
  ON CONFLICT (movie_id, second) DO UPDATE SET delta = r.delta + excluded.delta
), seen AS (
  INSERT INTO series_viewers (scope, id, interval, start, user_id)
  SELECT * FROM unnest($19::smallint[], $20::bigint[], $21::smallint[], $22::bigint[], $23::bigint[])
  ON CONFLICT DO NOTHING
  RETURNING scope, id, interval, start
), fresh AS (
  SELECT scope, id, interval, start, count(*) AS viewers FROM seen GROUP BY 1, 2, 3, 4
), moved AS (
  UPDATE settings SET analytics_seq = $30 WHERE id = 1
)
INSERT INTO series AS s (scope, id, interval, start, watched, events, viewers)
SELECT d.scope, d.id, d.interval, d.start, d.watched, d.events, coalesce(f.viewers, 0)
FROM unnest($24::smallint[], $25::bigint[], $26::smallint[], $27::bigint[], $28::bigint[], $29::bigint[])
  AS d(scope, id, interval, start, watched, events)
LEFT JOIN fresh f USING (scope, id, interval, start)
ON CONFLICT (scope, id, interval, start) DO UPDATE SET watched = s.watched + excluded.watched,
  events = s.events + excluded.events, viewers = s.viewers + excluded.viewers;

-- name: progress
SELECT as_of AS "asOf", lag_events AS "lagEvents", accounting, max_step AS "maxStep" FROM analytics_progress;

-- name: snapshot
-- A movie's figures come from two statements (the completed pairs need its
-- duration): one snapshot, taken after these locks. A rebuild's swap empties
-- the tables with TRUNCATE, which a snapshot taken before it would see as
-- empty beside the cursor it had.
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
LOCK TABLE movie_coverage, pair_coverage, retention_changes IN ACCESS SHARE MODE;

-- name: movie
SELECT m.id, m.slug, m.duration AS "durationSet", coalesce(c.max_at, 0) AS "maxAt", coalesce(c.viewers, 0) AS viewers,
  coalesce(c.coverage, 0) AS coverage, coalesce(c.watched, 0) AS watched,
  p.as_of AS "asOf", p.lag_events AS "lagEvents", p.accounting, p.max_step AS "maxStep"
FROM analytics_progress p, movies m LEFT JOIN movie_coverage c ON c.movie_id = m.id
WHERE m.slug = $1;

-- name: completed
-- The pairs of the movie with coverage from $2 on, and its retention's changes when $3.
SELECT (SELECT count(*) FROM pair_coverage WHERE movie_id = $1 AND coverage >= $2 AND coverage > 0) AS completed,
  CASE WHEN $3::boolean THEN (
    SELECT coalesce(json_agg(json_build_array(second, delta) ORDER BY second), '[]')
    FROM retention_changes WHERE movie_id = $1 AND delta <> 0
  ) END AS retention;

-- name: series
-- Stored buckets of the scope ($1; $2 the movie's slug or the user's name),
-- summed into buckets of $4 ms (the same size but for a user's hours and days,
-- summed from minutes; a user counts as a viewer of a bucket where they were
-- credited), with the scope's id: NULL for a movie or user never seen.
WITH target AS (
  SELECT CASE $1::smallint
    WHEN 0 THEN 0
    WHEN 1 THEN (SELECT id FROM movies WHERE slug = $2)
    ELSE (SELECT id FROM users u WHERE u.name = $2 AND EXISTS (SELECT 1 FROM user_movies um WHERE um.user_id = u.id))
  END AS id
), buckets AS (
  SELECT start - start % $4 AS start, sum(watched) AS watched, sum(events) AS events,
    CASE WHEN $1 = 2 THEN max((watched > 0)::int) ELSE sum(viewers) END AS viewers
  FROM series
  WHERE scope = $1 AND id = (SELECT id FROM target) AND interval = $3 AND start >= $5 AND start < $6
  GROUP BY 1
)
SELECT (SELECT id FROM target) AS id, p.as_of AS "asOf", p.lag_events AS "lagEvents", p.accounting, p.max_step AS "maxStep",
  (SELECT coalesce(json_agg(json_build_object('start', start, 'watched', watched, 'events', events, 'viewers', viewers) ORDER BY start), '[]')
   FROM buckets) AS rows
FROM analytics_progress p;

-- name: viewersSince
-- Users with an event received from $1 (ms) on, and the $2 movies with the most
-- of them; ties by their slugs' bytes, whatever the database's collation.
SELECT p.as_of AS "asOf", p.lag_events AS "lagEvents",
  (SELECT count(DISTINCT user_id) FROM pair_coverage WHERE last_received_at >= $1) AS viewers,
  (SELECT coalesce(json_agg(json_build_object('slug', t.slug, 'viewers', t.viewers) ORDER BY t.viewers DESC, t.slug COLLATE "C"), '[]')
   FROM (
     SELECT m.slug, count(*) AS viewers
     FROM pair_coverage pc JOIN movies m ON m.id = pc.movie_id
     WHERE pc.last_received_at >= $1
     GROUP BY m.id, m.slug ORDER BY viewers DESC, m.slug COLLATE "C" LIMIT $2
   ) t) AS movies
FROM analytics_progress p;

-- name: setDuration
INSERT INTO movies (slug, duration) VALUES ($1, $2)
ON CONFLICT (slug) DO UPDATE SET duration = excluded.duration;
