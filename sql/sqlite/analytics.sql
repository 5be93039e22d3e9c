-- The analytics follower's statements and the analytics answers' reads
-- (SPEC section 7), prepared once. A block runs from its "-- name:" line to
-- the next one. Each says which file it reads: <db> (the events, names and
-- durations) or <db>-analytics (analytics-schema.sql).

-- name: followed
-- <db>: what the follower needs of the database at the start of a round.
SELECT accounting, max_step AS maxStep, generation, coalesce((SELECT max(seq) FROM events), 0) AS lastSeq
FROM settings WHERE id = 1;

-- name: eventsAfter
-- <db>: the next events after the cursor as one JSON array, five numbers an
-- event (seq, user, movie, at, received at), in their order: one value to hand
-- to JavaScript rather than five a row reads them twice as fast. (An ORDER BY
-- in the aggregate would sort them again; the reader checks the order instead.)
SELECT '[' || group_concat(seq || ',' || user_id || ',' || movie_id || ',' || at || ',' || received_at) || ']'
FROM (SELECT seq, user_id, movie_id, at, received_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?);

-- name: state
-- <db>-analytics
SELECT cursor, generation, mark FROM follow_state WHERE id = 1;

-- name: setState
-- <db>-analytics
INSERT INTO follow_state (id, cursor, generation, mark) VALUES (1, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor, generation = excluded.generation, mark = excluded.mark;

-- name: markOf
-- <db>: what identifies the event numbered ?, as follow_state.mark records it.
SELECT received_at || ' ' || user_id || ' ' || movie_id || ' ' || at FROM events WHERE seq = ?;

-- name: pairState
-- <db>-analytics
SELECT position, watched, coverage, furthest, intervals, last_received_at AS lastReceivedAt, last_credited_at AS lastCreditedAt
FROM pair_coverage WHERE movie_id = ? AND user_id = ?;

-- name: writePair
-- <db>-analytics
INSERT INTO pair_coverage (user_id, movie_id, position, watched, coverage, furthest, intervals, last_received_at, last_credited_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (movie_id, user_id) DO UPDATE SET position = excluded.position, watched = excluded.watched,
  coverage = excluded.coverage, furthest = excluded.furthest, intervals = excluded.intervals,
  last_received_at = excluded.last_received_at, last_credited_at = excluded.last_credited_at;

-- name: addToMovie
-- <db>-analytics
INSERT INTO movie_coverage (movie_id, viewers, coverage, watched, events, max_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (movie_id) DO UPDATE SET viewers = viewers + excluded.viewers, coverage = coverage + excluded.coverage,
  watched = watched + excluded.watched, events = events + excluded.events, max_at = max(max_at, excluded.max_at);

-- name: addRetention
-- <db>-analytics
INSERT INTO retention_changes (movie_id, second, delta) VALUES (?, ?, ?)
ON CONFLICT (movie_id, second) DO UPDATE SET delta = delta + excluded.delta;

-- name: addSeen
-- <db>-analytics: the users of a JSON array of numbers, in one statement: a
-- round may bring a bucket a hundred thousand, and one statement a user took
-- four times as long.
INSERT OR IGNORE INTO series_viewers (scope, id, interval, start, user_id) SELECT ?, ?, ?, ?, value FROM json_each(?);

-- name: addSeries
-- <db>-analytics
INSERT INTO series (scope, id, interval, start, watched, events, viewers) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, id, interval, start) DO UPDATE SET watched = watched + excluded.watched,
  events = events + excluded.events, viewers = viewers + excluded.viewers;

-- name: reset
-- <db>-analytics: everything derived is dropped, to be followed again from the first event.
DELETE FROM pair_coverage;
DELETE FROM movie_coverage;
DELETE FROM retention_changes;
DELETE FROM series;
DELETE FROM series_viewers;
DELETE FROM follow_state;

-- name: movie
-- <db>
SELECT id, duration FROM movies WHERE slug = ?;

-- name: movieCoverage
-- <db>-analytics
SELECT max_at AS maxAt, viewers, coverage, watched FROM movie_coverage WHERE movie_id = ?;

-- name: completed
-- <db>-analytics
SELECT count(*) FROM pair_coverage WHERE movie_id = ? AND coverage >= ? AND coverage > 0;

-- name: retention
-- <db>-analytics
SELECT second, delta FROM retention_changes WHERE movie_id = ? AND delta <> 0 ORDER BY second;

-- name: movieId
-- <db>
SELECT id FROM movies WHERE slug = ?;

-- name: userId
-- <db>
SELECT id FROM users WHERE name = ?;

-- name: slug
-- <db>
SELECT slug FROM movies WHERE id = ?;

-- name: series
-- <db>-analytics: stored buckets of the scope, summed into buckets of :size
-- ms (the same size but for a user's hours and days, summed from minutes; a
-- user counts as a viewer of a bucket where they were credited).
SELECT start - start % :size AS start, sum(watched) AS watched, sum(events) AS events,
  CASE WHEN :scope = 2 THEN max(watched > 0) ELSE sum(viewers) END AS viewers
FROM series
WHERE scope = :scope AND id = :id AND interval = :interval AND start >= :from AND start < :to
GROUP BY 1 ORDER BY 1;

-- name: viewersSince
-- <db>-analytics
SELECT count(DISTINCT user_id) FROM pair_coverage WHERE last_received_at >= ?;

-- name: moviesSince
-- <db>-analytics: every movie watched in the window; the answer orders them by
-- viewers, then by slug, which only <db> knows.
SELECT movie_id AS movieId, count(*) AS viewers FROM pair_coverage
WHERE last_received_at >= ?
GROUP BY movie_id;

-- name: setDuration
-- <db>
INSERT INTO movies (slug, duration) VALUES (?, ?)
ON CONFLICT (slug) DO UPDATE SET duration = excluded.duration;
