-- Online rebuild: new totals are built in next_* tables beside the live ones,
-- then swapped in by one short transaction. Names (users, movies) are never
-- rebuilt: ids stay. The next_* tables have the live tables' columns and keys;
-- the test "a rebuild keeps the schema" holds them to it.
-- A block runs from its "-- name:" line to the next one.

-- name: createNext
DROP TABLE IF EXISTS next_user_movies;
DROP TABLE IF EXISTS next_user_totals; -- left by a rebuild interrupted before migration 3
DROP TABLE IF EXISTS next_movie_totals;
CREATE TABLE next_user_movies (
  user_id    INTEGER NOT NULL REFERENCES users (id),
  movie_id   INTEGER NOT NULL REFERENCES movies (id),
  position   INTEGER NOT NULL,
  watched    INTEGER NOT NULL,
  events     INTEGER NOT NULL,
  last_seq   INTEGER NOT NULL,
  updated_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;
CREATE TABLE next_movie_totals (
  movie_id   INTEGER PRIMARY KEY,
  watched    INTEGER NOT NULL,
  viewers    INTEGER NOT NULL,
  events     INTEGER NOT NULL,
  last_seq   INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

-- name: dropNext
DROP TABLE IF EXISTS next_user_movies;
DROP TABLE IF EXISTS next_movie_totals;

-- name: lastSeq
SELECT coalesce(max(seq), 0) FROM events;

-- name: pairsUpTo
-- Each pair's events in arrival order, one row a pair, pairs in (user, movie)
-- order: SQLite's sorter does the grouping in bounded memory, spilling to
-- temporary files. received_at is taken from the row of max(seq), the pair's
-- latest event.
SELECT user_id, movie_id, group_concat(at, ',' ORDER BY seq), count(*), max(seq), received_at
FROM events
WHERE seq <= ?
GROUP BY user_id, movie_id;

-- name: eventsAfter
SELECT seq, user_id, movie_id, at, received_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?;

-- The rebuild writes its tables with the live ingest's own statements
-- (queries.sql: pairState, insertPair, updatePair, addToMovie),
-- pointed at the next_* tables.

-- name: swap
-- Dropping the live totals frees their pages; the renames and the index on
-- movie totals (one row a movie) are cheap.
DROP TABLE user_movies;
DROP TABLE movie_totals;
ALTER TABLE next_user_movies RENAME TO user_movies;
ALTER TABLE next_movie_totals RENAME TO movie_totals;
CREATE INDEX movie_totals_by_watched ON movie_totals (watched DESC, movie_id);

-- name: writeRule
-- In the swap's transaction: the new rule, the generation, and the rebuild's end.
UPDATE settings SET accounting = :accounting, max_step = :maxStep, generation = generation + 1, last_swap_at = :now,
  rebuild_started_at = NULL, rebuild_done = :done, rebuild_total = :done, rebuild_progress_at = :now
WHERE id = 1;

-- What a rebuild says of itself in the settings row, for a server to read
-- (queries.sql: rebuildState): its start, then its progress in the
-- transaction of each chunk it writes.

-- name: startRebuild
UPDATE settings SET rebuild_started_at = :now, rebuild_done = 0, rebuild_total = :total, rebuild_progress_at = :now,
  rebuild_pid = :pid, rebuild_host = :host
WHERE id = 1;

-- name: rebuildProgress
UPDATE settings SET rebuild_done = ?, rebuild_total = ?, rebuild_progress_at = ? WHERE id = 1;

-- name: rebuildFailed
-- Its own start only: another rebuild may have started since. How far it went stays.
UPDATE settings SET rebuild_started_at = NULL, rebuild_progress_at = :now
WHERE id = 1 AND rebuild_started_at = :startedAt AND rebuild_pid = :pid AND rebuild_host = :host;
