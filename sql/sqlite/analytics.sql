-- The analytics follower's statements and the analytics answers' reads
-- (SPEC section 7), prepared once. A block runs from its "-- name:" line to the next one.

-- name: cursor
SELECT analytics_seq FROM settings WHERE id = 1;

-- name: setCursor
UPDATE settings SET analytics_seq = ? WHERE id = 1;

-- name: eventsAfter
SELECT seq, user_id AS userId, movie_id AS movieId, at, received_at AS receivedAt FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: pairState
SELECT position, watched, coverage, furthest, intervals, last_received_at AS lastReceivedAt, last_credited_at AS lastCreditedAt
FROM pair_coverage WHERE user_id = ? AND movie_id = ?;

-- name: writePair
INSERT INTO pair_coverage (user_id, movie_id, position, watched, coverage, furthest, intervals, last_received_at, last_credited_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id, movie_id) DO UPDATE SET position = excluded.position, watched = excluded.watched,
  coverage = excluded.coverage, furthest = excluded.furthest, intervals = excluded.intervals,
  last_received_at = excluded.last_received_at, last_credited_at = excluded.last_credited_at;

-- name: addToMovie
INSERT INTO movie_coverage (movie_id, viewers, coverage, watched, events, max_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (movie_id) DO UPDATE SET viewers = viewers + excluded.viewers, coverage = coverage + excluded.coverage,
  watched = watched + excluded.watched, events = events + excluded.events, max_at = max(max_at, excluded.max_at);

-- name: addRetention
INSERT INTO retention_changes (movie_id, second, delta) VALUES (?, ?, ?)
ON CONFLICT (movie_id, second) DO UPDATE SET delta = delta + excluded.delta;

-- name: addSeen
INSERT OR IGNORE INTO series_viewers (scope, id, interval, start, user_id) VALUES (?, ?, ?, ?, ?);

-- name: addSeries
INSERT INTO series (scope, id, interval, start, watched, events, viewers) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, id, interval, start) DO UPDATE SET watched = watched + excluded.watched,
  events = events + excluded.events, viewers = viewers + excluded.viewers;

-- name: progress
SELECT s.analytics_seq AS asOf, coalesce((SELECT max(seq) FROM events), 0) - s.analytics_seq AS lagEvents,
  s.accounting, s.max_step AS maxStep
FROM settings s WHERE s.id = 1;

-- name: movie
SELECT m.id, m.slug, m.duration AS durationSet, coalesce(c.max_at, 0) AS maxAt, coalesce(c.viewers, 0) AS viewers,
  coalesce(c.coverage, 0) AS coverage, coalesce(c.watched, 0) AS watched
FROM movies m LEFT JOIN movie_coverage c ON c.movie_id = m.id WHERE m.slug = ?;

-- name: completed
SELECT count(*) FROM pair_coverage WHERE movie_id = ? AND coverage >= ? AND coverage > 0;

-- name: retention
SELECT second, delta FROM retention_changes WHERE movie_id = ? AND delta <> 0 ORDER BY second;

-- name: movieId
SELECT id FROM movies WHERE slug = ?;

-- name: userId
SELECT id FROM users WHERE name = ?;

-- name: series
-- Stored buckets of the scope, summed into buckets of ? ms (the same size but
-- for a user's hours and days, summed from minutes; a user counts as a viewer
-- of a bucket where they were credited).
SELECT start - start % :size AS start, sum(watched) AS watched, sum(events) AS events,
  CASE WHEN :scope = 2 THEN max(watched > 0) ELSE sum(viewers) END AS viewers
FROM series
WHERE scope = :scope AND id = :id AND interval = :interval AND start >= :from AND start < :to
GROUP BY 1 ORDER BY 1;

-- name: viewersSince
SELECT count(DISTINCT user_id) FROM pair_coverage WHERE last_received_at >= ?;

-- name: topMoviesSince
SELECT m.slug, count(*) AS viewers
FROM pair_coverage p JOIN movies m ON m.id = p.movie_id
WHERE p.last_received_at >= ?
GROUP BY p.movie_id ORDER BY viewers DESC, m.slug LIMIT ?;

-- name: setDuration
INSERT INTO movies (slug, duration) VALUES (?, ?)
ON CONFLICT (slug) DO UPDATE SET duration = excluded.duration;

-- name: reset
-- Run by a rebuild's swap: the follower derives everything again.
DELETE FROM pair_coverage;
DELETE FROM movie_coverage;
DELETE FROM retention_changes;
DELETE FROM series;
DELETE FROM series_viewers;
UPDATE settings SET analytics_seq = 0 WHERE id = 1;
