-- Named statements of the PostgreSQL store. A batch's rows travel as arrays
-- (unnest), so a batch costs the same few round trips whatever its size.

-- name: readSettings
SELECT accounting, max_step AS "maxStep" FROM settings WHERE id = 1;

-- name: readSettingsForShare
-- At the start of a batch: a rebuild's swap (FOR UPDATE) waits for running batches and holds new ones back.
SELECT accounting, max_step AS "maxStep" FROM settings WHERE id = 1 FOR SHARE;

-- name: writeSettings
INSERT INTO settings (id, accounting, max_step) VALUES (1, $1, $2)
ON CONFLICT (id) DO UPDATE SET accounting = excluded.accounting, max_step = excluded.max_step;

-- name: knownClientIds
SELECT client_id FROM events WHERE client_id = ANY($1::text[]);

-- name: addUsers
-- In name order, so that two batches adding the same new names cannot deadlock.
INSERT INTO users (name) SELECT n FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (name) DO NOTHING;

-- name: userIds
SELECT name, id FROM users WHERE name = ANY($1::text[]);

-- name: addMovies
INSERT INTO movies (slug) SELECT s FROM unnest($1::text[]) AS s ORDER BY s ON CONFLICT (slug) DO NOTHING;

-- name: movieIds
SELECT slug AS name, id FROM movies WHERE slug = ANY($1::text[]);

-- name: addPairs
-- A placeholder row for each new pair, so that it can be locked like the others.
INSERT INTO user_movies (user_id, movie_id, position, watched, events, last_seq, updated_at)
SELECT u, m, 0, 0, 0, 0, 0 FROM unnest($1::bigint[], $2::bigint[]) AS p(u, m) ORDER BY u, m
ON CONFLICT (user_id, movie_id) DO NOTHING;

-- name: lockPairs
-- In (user, movie) order: every batch takes its pair locks in one global order.
SELECT user_id AS "userId", movie_id AS "movieId", position, watched, events, last_seq AS "lastSeq", updated_at AS "updatedAt"
FROM user_movies
WHERE (user_id, movie_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))
ORDER BY user_id, movie_id
FOR UPDATE;

-- name: takeSeqs
-- Taken while the pairs are locked: a pair's events get increasing numbers in the order they are applied.
SELECT nextval('event_seq') AS seq FROM generate_series(1, $1::int);

-- name: writeBatch
-- The events, the pairs' new states, and the users' and movies' deltas, in one statement.
-- Totals rows are written in key order, so that two batches cannot deadlock on them.
WITH new_events AS (
  INSERT INTO events (seq, user_id, movie_id, at, received_at, client_id)
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::bigint[], $6::text[])
), pairs AS (
  UPDATE user_movies um SET position = p.position, watched = p.watched, events = p.events, last_seq = p.last_seq, updated_at = p.updated_at
  FROM unnest($7::bigint[], $8::bigint[], $9::int[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
    AS p(user_id, movie_id, position, watched, events, last_seq, updated_at)
  WHERE um.user_id = p.user_id AND um.movie_id = p.movie_id
), user_deltas AS (
  INSERT INTO user_totals AS t (user_id, watched, movies, events, last_seq, updated_at)
  SELECT * FROM unnest($14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[]) ORDER BY 1
  ON CONFLICT (user_id) DO UPDATE SET watched = t.watched + excluded.watched, movies = t.movies + excluded.movies,
    events = t.events + excluded.events,
    -- Batches of one user on other pairs may commit out of seq order: keep the latest.
    updated_at = CASE WHEN excluded.last_seq > t.last_seq THEN excluded.updated_at ELSE t.updated_at END,
    last_seq = greatest(t.last_seq, excluded.last_seq)
)
INSERT INTO movie_totals AS t (movie_id, part, watched, viewers, events, last_seq, updated_at)
SELECT m, $26::smallint, w, v, e, s, u
FROM unnest($20::bigint[], $21::bigint[], $22::bigint[], $23::bigint[], $24::bigint[], $25::bigint[]) AS d(m, w, v, e, s, u) ORDER BY 1
ON CONFLICT (movie_id, part) DO UPDATE SET watched = t.watched + excluded.watched, viewers = t.viewers + excluded.viewers,
  events = t.events + excluded.events,
  updated_at = CASE WHEN excluded.last_seq > t.last_seq THEN excluded.updated_at ELSE t.updated_at END,
  last_seq = greatest(t.last_seq, excluded.last_seq);

-- name: movie
SELECT m.slug, sum(t.watched)::bigint AS "watchTime", sum(t.viewers)::bigint AS viewers, sum(t.events)::bigint AS events,
  (array_agg(t.updated_at ORDER BY t.last_seq DESC))[1] AS "updatedAt"
FROM movies m JOIN movie_totals t ON t.movie_id = m.id
WHERE m.slug = $1
GROUP BY m.slug;

-- name: user
SELECT u.name AS user, t.watched AS "watchTime", t.movies, t.events, t.updated_at AS "updatedAt"
FROM users u JOIN user_totals t ON t.user_id = u.id
WHERE u.name = $1;

-- name: pair
SELECT u.name AS user, m.slug, um.position AS "latestMoment", um.watched AS "watchTime", um.events, um.updated_at AS "updatedAt"
FROM users u JOIN user_movies um ON um.user_id = u.id JOIN movies m ON m.id = um.movie_id
WHERE u.name = $1 AND m.slug = $2 AND um.events > 0;

-- name: userMovies
SELECT m.slug, um.position AS "latestMoment", um.watched AS "watchTime", um.events, um.updated_at AS "updatedAt"
FROM user_movies um JOIN movies m ON m.id = um.movie_id
WHERE um.user_id = $1 AND um.events > 0
ORDER BY um.last_seq DESC
LIMIT $2 OFFSET $3;

-- name: userId
SELECT id FROM users u WHERE name = $1 AND EXISTS (SELECT 1 FROM user_totals t WHERE t.user_id = u.id);

-- name: topMovies
SELECT m.slug, t."watchTime", t.viewers, t.events, t."updatedAt"
FROM (
  SELECT movie_id, sum(watched)::bigint AS "watchTime", sum(viewers)::bigint AS viewers, sum(events)::bigint AS events,
    (array_agg(updated_at ORDER BY last_seq DESC))[1] AS "updatedAt"
  FROM movie_totals GROUP BY movie_id
) t JOIN movies m ON m.id = t.movie_id
ORDER BY t."watchTime" DESC, t.movie_id
LIMIT $1 OFFSET $2;

-- name: rebuildState
-- Where a `watchtime rebuild` (another process) is, and the last swap: two
-- one-row tables by their keys, read at every scrape of /metrics.
SELECT coalesce(s.generation, 0) AS generation, s.last_swap_at AS "lastSwapAt",
  r.started_at AS "startedAt", coalesce(r.done, 0) AS done, coalesce(r.total, 0) AS total,
  r.progress_at AS "progressAt", r.pid, r.host
FROM (VALUES (1)) AS one (id)
LEFT JOIN settings s ON s.id = one.id
LEFT JOIN rebuild_progress r ON r.id = one.id;
