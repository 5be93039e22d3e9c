-- The online rebuild of the PostgreSQL store: new totals are built in next_*
-- tables beside the live ones, then swapped in.

-- name: createNext
-- next_user_totals: left by a rebuild interrupted before migration 3.
DROP TABLE IF EXISTS next_user_movies, next_user_totals, next_movie_totals;
-- LIKE copies no storage parameters: the fill factors are migration 3's.
CREATE TABLE next_user_movies (LIKE user_movies INCLUDING ALL) WITH (fillfactor = 80);
CREATE TABLE next_movie_totals (LIKE movie_totals INCLUDING ALL) WITH (fillfactor = 50);

-- name: lastCommittedSeq
-- Run while holding the batches' lock alone, so no batch is writing. The fence moves, so a batch
-- that took its numbers before now fails and takes new ones; every event up to the last number
-- taken is therefore committed, or never will be.
WITH moved AS (UPDATE settings SET fence = fence + 1 WHERE id = 1)
SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS seq FROM event_seq;

-- name: snapshotPairs
-- Each pair's events up to $1, in the order they were applied.
DECLARE pairs NO SCROLL CURSOR FOR
SELECT user_id AS "userId", movie_id AS "movieId", array_agg(at ORDER BY seq) AS ats, max(seq) AS "lastSeq",
  (array_agg(received_at ORDER BY seq DESC))[1] AS "updatedAt"
FROM events WHERE seq <= $1
GROUP BY user_id, movie_id;

-- name: insertNextPairs
INSERT INTO next_user_movies (user_id, movie_id, position, watched, events, last_seq, updated_at)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]);

-- name: sumNextTotals
-- A movie's totals are sums over its pairs: no rule in them.
INSERT INTO next_movie_totals (movie_id, part, watched, viewers, events, last_seq, updated_at)
SELECT movie_id, 0, sum(watched), count(*), sum(events), max(last_seq), (array_agg(updated_at ORDER BY last_seq DESC))[1]
FROM next_user_movies GROUP BY movie_id;

-- name: eventsAfter
-- Events that arrived during the rebuild, in the order they were applied.
SELECT seq, user_id AS "userId", movie_id AS "movieId", at, received_at AS "receivedAt"
FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq;

-- name: nextPairs
SELECT user_id AS "userId", movie_id AS "movieId", position, watched, events, last_seq AS "lastSeq", updated_at AS "updatedAt"
FROM next_user_movies WHERE (user_id, movie_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]));

-- name: writeNext
-- A catch-up round's pairs and deltas on the next tables, as writeBatch does on the live ones.
WITH pairs AS (
  INSERT INTO next_user_movies AS um (user_id, movie_id, position, watched, events, last_seq, updated_at)
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
  ON CONFLICT (user_id, movie_id) DO UPDATE SET position = excluded.position, watched = excluded.watched,
    events = excluded.events, last_seq = excluded.last_seq, updated_at = excluded.updated_at
)
INSERT INTO next_movie_totals AS t (movie_id, part, watched, viewers, events, last_seq, updated_at)
SELECT m, 0, w, v, e, s, u FROM unnest($8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[]) AS d(m, w, v, e, s, u)
ON CONFLICT (movie_id, part) DO UPDATE SET watched = t.watched + excluded.watched, viewers = t.viewers + excluded.viewers,
  events = t.events + excluded.events,
  updated_at = CASE WHEN excluded.last_seq > t.last_seq THEN excluded.updated_at ELSE t.updated_at END,
  last_seq = greatest(t.last_seq, excluded.last_seq);

-- name: swap
-- In the transaction that holds the follower's lock (no round under way) and
-- the batches' lock alone. The analytics are emptied and their cursor set back
-- to 0, as SQLite's reset does: the follower derives them again from the
-- events under the new rule. Readers that read them in two statements lock
-- them first (analytics.sql: snapshot), so none sees them emptied beside the
-- old cursor.
DROP TABLE user_movies, movie_totals;
ALTER TABLE next_user_movies RENAME TO user_movies;
ALTER TABLE next_movie_totals RENAME TO movie_totals;
TRUNCATE pair_coverage, movie_coverage, retention_changes, series, series_viewers;
UPDATE settings SET analytics_seq = 0 WHERE id = 1;

-- What a rebuild says of itself, for a server to read (queries.sql:
-- rebuildState): its start, its progress once a chunk, and its end, in a row
-- that nothing else locks.

-- name: startRebuild
UPDATE rebuild_progress SET started_at = $1, done = 0, total = $2, progress_at = $1, pid = $3, host = $4 WHERE id = 1;

-- name: rebuildProgress
-- On its own, once a chunk of the snapshot pass: its commit does not wait for
-- the disk (synchronous_commit off for this statement's transaction only).
-- Progress that a crash of the database loses is of no matter, and a later
-- synchronous commit (the swap) flushes it anyway.
UPDATE rebuild_progress SET done = $1, total = $2, progress_at = $3
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_wait
WHERE id = 1;

-- name: rebuildProgressInTransaction
-- In a catch-up round's transaction, which commits anyway.
UPDATE rebuild_progress SET done = $1, total = $2, progress_at = $3 WHERE id = 1;

-- name: rebuildFailed
-- Its own start only: another rebuild may have started since. How far it went stays.
UPDATE rebuild_progress SET started_at = NULL, progress_at = $4
WHERE id = 1 AND started_at = $1 AND pid = $2 AND host = $3;

-- name: writeRule
-- In the swap's transaction, which holds the batches' lock alone (and so
-- every batch): the new rule, the generation, when, and the rebuild's end, in
-- one round trip.
WITH ended AS (
  UPDATE rebuild_progress SET started_at = NULL, done = $4, total = $4, progress_at = $3 WHERE id = 1
)
UPDATE settings SET accounting = $1, max_step = $2, generation = generation + 1, last_swap_at = $3 WHERE id = 1;
