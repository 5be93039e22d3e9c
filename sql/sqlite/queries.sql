-- Named statements, prepared once when the store opens.
-- A block runs from its "-- name:" line to the next one.

-- name: readSettings
SELECT accounting, max_step AS maxStep FROM settings WHERE id = 1;

-- name: writeSettings
INSERT INTO settings (id, accounting, max_step) VALUES (1, :accounting, :maxStep)
ON CONFLICT (id) DO UPDATE SET accounting = excluded.accounting, max_step = excluded.max_step;

-- name: touchSettings
-- A write that changes nothing, to see that a commit goes through.
UPDATE settings SET accounting = accounting WHERE id = 1;

-- name: dataVersion
-- Changes when another connection commits.
PRAGMA data_version;

-- name: lastSeq
SELECT coalesce(max(seq), 0) FROM events;

-- name: clientIdExists
SELECT 1 FROM events WHERE client_id = ?;

-- name: userId
SELECT id FROM users WHERE name = ?;

-- name: insertUser
INSERT INTO users (name) VALUES (?) RETURNING id;

-- name: movieId
SELECT id FROM movies WHERE slug = ?;

-- name: insertMovie
INSERT INTO movies (slug) VALUES (?) RETURNING id;

-- name: insertEvent
INSERT INTO events (seq, user_id, movie_id, at, received_at, client_id) VALUES (?, ?, ?, ?, ?, ?);

-- name: pairState
SELECT position, watched, events, last_seq AS lastSeq, updated_at AS updatedAt
FROM user_movies WHERE user_id = ? AND movie_id = ?;

-- The batch writes below run once per row, with positional parameters.
-- A pair is inserted or updated, since the batch knows which; a movie's
-- totals are added to, the row made on its first event. A user's totals have
-- no row of their own: the user query sums the user's pairs (migration 3).

-- name: insertPair
INSERT INTO user_movies (user_id, movie_id, position, watched, events, last_seq, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: updatePair
UPDATE user_movies SET position = ?, watched = ?, events = ?, last_seq = ?, updated_at = ? WHERE user_id = ? AND movie_id = ?;

-- name: addToMovie
INSERT INTO movie_totals (movie_id, watched, viewers, events, last_seq, updated_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (movie_id) DO UPDATE SET watched = watched + excluded.watched, viewers = viewers + excluded.viewers,
  events = events + excluded.events, last_seq = excluded.last_seq, updated_at = excluded.updated_at;

-- name: movie
SELECT m.slug, t.watched AS watchTime, t.viewers, t.events, t.updated_at AS updatedAt
FROM movies m JOIN movie_totals t ON t.movie_id = m.id
WHERE m.slug = ?;

-- name: user
-- The sums of the user's pairs, which are contiguous in user_movies' key. With
-- a single max(), SQLite takes the bare updated_at from the row holding it:
-- the pair of the user's latest event. No pair, no row.
SELECT user, watchTime, movies, events, updatedAt FROM (
  SELECT u.name AS user, sum(um.watched) AS watchTime, count(*) AS movies, sum(um.events) AS events,
    max(um.last_seq), um.updated_at AS updatedAt
  FROM users u JOIN user_movies um ON um.user_id = u.id
  WHERE u.name = ?
  GROUP BY u.id
);

-- name: pair
SELECT u.name AS user, m.slug, um.position AS latestMoment, um.watched AS watchTime,
  um.events, um.updated_at AS updatedAt
FROM users u
JOIN movies m
JOIN user_movies um ON um.user_id = u.id AND um.movie_id = m.id
WHERE u.name = ? AND m.slug = ?;

-- name: userMovies
-- Most recently watched first: last_seq is the arrival order of the pair's latest event.
SELECT m.slug, um.position AS latestMoment, um.watched AS watchTime, um.events, um.updated_at AS updatedAt
FROM user_movies um
JOIN movies m ON m.id = um.movie_id
WHERE um.user_id = ?
ORDER BY um.last_seq DESC
LIMIT ? OFFSET ?;

-- name: topMovies
SELECT m.slug, t.watched AS watchTime, t.viewers, t.events, t.updated_at AS updatedAt
FROM movie_totals t JOIN movies m ON m.id = t.movie_id
ORDER BY t.watched DESC, t.movie_id
LIMIT ? OFFSET ?;

-- name: rebuildState
-- Where a `watchtime rebuild` (another process) is, and the last swap: the
-- settings row, read at every scrape of /metrics. No settings row yet: none.
SELECT coalesce(s.generation, 0) AS generation, s.last_swap_at AS lastSwapAt,
  s.rebuild_started_at AS startedAt, coalesce(s.rebuild_done, 0) AS done, coalesce(s.rebuild_total, 0) AS total,
  s.rebuild_progress_at AS progressAt, s.rebuild_pid AS pid, s.rebuild_host AS host
FROM (SELECT 1 AS id) one LEFT JOIN settings s ON s.id = one.id;
