-- Named statements of the PostgreSQL store. A batch's rows travel as arrays
-- (unnest), so a batch costs the same few round trips whatever its size.

-- name: readSettings
SELECT accounting, max_step AS "maxStep" FROM settings WHERE id = 1;

-- name: writeSettings
INSERT INTO settings (id, accounting, max_step) VALUES (1, $1, $2)
ON CONFLICT (id) DO UPDATE SET accounting = excluded.accounting, max_step = excluded.max_step;

-- name: nameIds
SELECT watchtime_name_ids($1::text[], $2::text[]) AS ids;

-- The two round trips of a batch (migration 3 defines the functions).

-- name: readBatch
SELECT watchtime_read_batch($1::bigint[], $2::bigint[], $3::text[], $4::int) AS batch;

-- name: writeBatch
SELECT watchtime_write_batch($1::bigint, $2::bigint[], $3::bigint[], $4::bigint[], $5::int[], $6::bigint[], $7::text[],
  $8::bigint[], $9::bigint[], $10::int[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[],
  $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], $22::smallint);

-- name: movie
SELECT m.slug, sum(t.watched)::bigint AS "watchTime", sum(t.viewers)::bigint AS viewers, sum(t.events)::bigint AS events,
  (array_agg(t.updated_at ORDER BY t.last_seq DESC))[1] AS "updatedAt"
FROM movies m JOIN movie_totals t ON t.movie_id = m.id
WHERE m.slug = $1
GROUP BY m.slug;

-- name: user
-- Sums over the user's pairs, which sit side by side under the primary key.
SELECT u.name AS user, sum(um.watched)::bigint AS "watchTime", count(*)::bigint AS movies, sum(um.events)::bigint AS events,
  (array_agg(um.updated_at ORDER BY um.last_seq DESC))[1] AS "updatedAt"
FROM users u JOIN user_movies um ON um.user_id = u.id
WHERE u.name = $1
GROUP BY u.name;

-- name: pair
SELECT u.name AS user, m.slug, um.position AS "latestMoment", um.watched AS "watchTime", um.events, um.updated_at AS "updatedAt"
FROM users u JOIN user_movies um ON um.user_id = u.id JOIN movies m ON m.id = um.movie_id
WHERE u.name = $1 AND m.slug = $2;

-- name: userMovies
SELECT m.slug, um.position AS "latestMoment", um.watched AS "watchTime", um.events, um.updated_at AS "updatedAt"
FROM user_movies um JOIN movies m ON m.id = um.movie_id
WHERE um.user_id = $1
ORDER BY um.last_seq DESC
LIMIT $2 OFFSET $3;

-- name: userId
SELECT id FROM users u WHERE name = $1 AND EXISTS (SELECT 1 FROM user_movies um WHERE um.user_id = u.id);

-- name: topMovies
SELECT m.slug, t."watchTime", t.viewers, t.events, t."updatedAt"
FROM (
  SELECT movie_id, sum(watched)::bigint AS "watchTime", sum(viewers)::bigint AS viewers, sum(events)::bigint AS events,
    (array_agg(updated_at ORDER BY last_seq DESC))[1] AS "updatedAt"
  FROM movie_totals GROUP BY movie_id
) t JOIN movies m ON m.id = t.movie_id
ORDER BY t."watchTime" DESC, t.movie_id
LIMIT $1 OFFSET $2;

-- name: eventsStored
-- Every stored event counts once in its movie's totals, in the transaction that stores it.
SELECT coalesce(sum(events), 0)::bigint AS n FROM movie_totals;

-- name: rebuildState
-- Where a `watchtime rebuild` (another process) is, and the last swap: two
-- one-row tables by their keys, read at every scrape of /metrics.
SELECT coalesce(s.generation, 0) AS generation, s.last_swap_at AS "lastSwapAt",
  r.started_at AS "startedAt", coalesce(r.done, 0) AS done, coalesce(r.total, 0) AS total,
  r.progress_at AS "progressAt", r.pid, r.host
FROM (VALUES (1)) AS one (id)
LEFT JOIN settings s ON s.id = one.id
LEFT JOIN rebuild_progress r ON r.id = one.id;
