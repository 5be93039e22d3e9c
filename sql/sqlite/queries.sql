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
SELECT position, watched, events FROM user_movies WHERE user_id = ? AND movie_id = ?;

-- The batch writes below run once per row: positional parameters, and a
-- plain INSERT or UPDATE rather than an upsert, are measurably cheaper.

-- name: insertPair
INSERT INTO user_movies (user_id, movie_id, position, watched, events, last_seq) VALUES (?, ?, ?, ?, ?, ?);

-- name: updatePair
UPDATE user_movies SET position = ?, watched = ?, events = ?, last_seq = ? WHERE user_id = ? AND movie_id = ?;

-- name: addToUser
UPDATE users SET watched = watched + ?, movies = movies + ?, events = events + ?, last_seq = ? WHERE id = ?;

-- name: addToMovie
UPDATE movies SET watched = watched + ?, viewers = viewers + ?, events = events + ?, last_seq = ? WHERE id = ?;

-- name: eventsAfter
SELECT seq, user_id, movie_id, at FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: resetUsers
UPDATE users SET watched = 0, movies = 0, events = 0, last_seq = 0;

-- name: resetMovies
UPDATE movies SET watched = 0, viewers = 0, events = 0, last_seq = 0;

-- name: resetPairs
DELETE FROM user_movies;

-- name: movie
SELECT m.slug, m.watched AS watchTime, m.viewers, m.events, e.received_at AS updatedAt
FROM movies m JOIN events e ON e.seq = m.last_seq
WHERE m.slug = ?;

-- name: user
SELECT u.name AS user, u.watched AS watchTime, u.movies, u.events, e.received_at AS updatedAt
FROM users u JOIN events e ON e.seq = u.last_seq
WHERE u.name = ?;

-- name: pair
SELECT u.name AS user, m.slug, um.position AS latestMoment, um.watched AS watchTime,
  um.events, e.received_at AS updatedAt
FROM users u
JOIN user_movies um ON um.user_id = u.id
JOIN movies m ON m.id = um.movie_id
JOIN events e ON e.seq = um.last_seq
WHERE u.name = ? AND m.slug = ?;

-- name: userMovies
-- Most recently watched first: last_seq is the arrival order of the pair's latest event.
SELECT m.slug, um.position AS latestMoment, um.watched AS watchTime, um.events,
  e.received_at AS updatedAt
FROM user_movies um
JOIN movies m ON m.id = um.movie_id
JOIN events e ON e.seq = um.last_seq
WHERE um.user_id = ?
ORDER BY um.last_seq DESC
LIMIT ? OFFSET ?;

-- name: topMovies
SELECT m.slug, m.watched AS watchTime, m.viewers, m.events, e.received_at AS updatedAt
FROM movies m JOIN events e ON e.seq = m.last_seq
ORDER BY m.watched DESC, m.id
LIMIT ? OFFSET ?;
