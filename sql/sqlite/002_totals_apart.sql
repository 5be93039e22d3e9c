-- Totals move out of users and movies into tables of their own, so that a
-- rebuild can build new totals beside the live ones and swap them in without
-- touching the names, which never change. Every totals row carries the
-- receive time of its latest event: a lookup no longer joins the events.

CREATE TABLE user_totals (
  user_id    INTEGER PRIMARY KEY,  -- users.id
  watched    INTEGER NOT NULL,
  movies     INTEGER NOT NULL,
  events     INTEGER NOT NULL,
  last_seq   INTEGER NOT NULL,     -- the user's most recent event
  updated_at INTEGER NOT NULL      -- its receive time, milliseconds since the Unix epoch
);
INSERT INTO user_totals (user_id, watched, movies, events, last_seq, updated_at)
SELECT u.id, u.watched, u.movies, u.events, u.last_seq, coalesce(e.received_at, 0)
FROM users u LEFT JOIN events e ON e.seq = u.last_seq
WHERE u.events > 0;

CREATE TABLE movie_totals (
  movie_id   INTEGER PRIMARY KEY,  -- movies.id
  watched    INTEGER NOT NULL,
  viewers    INTEGER NOT NULL,
  events     INTEGER NOT NULL,
  last_seq   INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
INSERT INTO movie_totals (movie_id, watched, viewers, events, last_seq, updated_at)
SELECT m.id, m.watched, m.viewers, m.events, m.last_seq, coalesce(e.received_at, 0)
FROM movies m LEFT JOIN events e ON e.seq = m.last_seq
WHERE m.events > 0;
CREATE INDEX movie_totals_by_watched ON movie_totals (watched DESC, movie_id);

DROP INDEX movies_by_watched;
ALTER TABLE users DROP COLUMN watched;
ALTER TABLE users DROP COLUMN movies;
ALTER TABLE users DROP COLUMN events;
ALTER TABLE users DROP COLUMN last_seq;
ALTER TABLE movies DROP COLUMN watched;
ALTER TABLE movies DROP COLUMN viewers;
ALTER TABLE movies DROP COLUMN events;
ALTER TABLE movies DROP COLUMN last_seq;

ALTER TABLE user_movies ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE user_movies SET updated_at = coalesce((SELECT received_at FROM events WHERE seq = user_movies.last_seq), 0);

-- Bumped by every rebuild that swaps in new totals: a server sees from it
-- that what it remembers of the totals is stale.
ALTER TABLE settings ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
