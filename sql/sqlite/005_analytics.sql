-- SPEC section 7: the analytics, derived from the events by a follower off the
-- ingest path (src/analytics/follower.ts). It reads events after its cursor
-- and writes these tables and the cursor in one transaction, so they always
-- hold exactly the events up to analytics_seq. A rebuild empties them and sets
-- the cursor back to 0: the follower derives them again from the events.
ALTER TABLE settings ADD COLUMN analytics_seq INTEGER NOT NULL DEFAULT 0;

-- Set by PUT /movies/{slug}; NULL: the duration is observed (the largest at).
-- Names are never rebuilt, so a duration is kept across a rebuild.
ALTER TABLE movies ADD COLUMN duration INTEGER CHECK (duration > 0);

-- A pair as the follower left it: its own position (it trails the live
-- totals), its covered seconds as 32-bit [start, end) intervals, and the
-- receive times that say who watches now and which buckets count the user.
CREATE TABLE pair_coverage (
  user_id          INTEGER NOT NULL,
  movie_id         INTEGER NOT NULL,
  position         INTEGER NOT NULL,
  watched          INTEGER NOT NULL,
  coverage         INTEGER NOT NULL,
  furthest         INTEGER NOT NULL,
  intervals        BLOB    NOT NULL,
  last_received_at INTEGER NOT NULL,
  last_credited_at INTEGER,
  PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;
-- Completed pairs: those of a movie with coverage from a threshold on.
CREATE INDEX pair_coverage_by_movie ON pair_coverage (movie_id, coverage);
-- Viewers now: pairs with an event in the last two minutes.
CREATE INDEX pair_coverage_by_received ON pair_coverage (last_received_at);

CREATE TABLE movie_coverage (
  movie_id INTEGER PRIMARY KEY,
  viewers  INTEGER NOT NULL,  -- pairs with coverage > 0
  coverage INTEGER NOT NULL,
  watched  INTEGER NOT NULL,
  events   INTEGER NOT NULL,
  max_at   INTEGER NOT NULL   -- the observed duration
);

-- Retention as changes: at `second`, `delta` more (or fewer) pairs cover it.
CREATE TABLE retention_changes (
  movie_id INTEGER NOT NULL,
  second   INTEGER NOT NULL,
  delta    INTEGER NOT NULL,
  PRIMARY KEY (movie_id, second)
) WITHOUT ROWID;

-- Time series: scope 0 the service (id 0), 1 a movie, 2 a user (minutes
-- only); interval 0 minute, 1 hour, 2 day; start in ms since the epoch.
CREATE TABLE series (
  scope    INTEGER NOT NULL,
  id       INTEGER NOT NULL,
  interval INTEGER NOT NULL,
  start    INTEGER NOT NULL,
  watched  INTEGER NOT NULL,
  events   INTEGER NOT NULL,
  viewers  INTEGER NOT NULL,
  PRIMARY KEY (scope, id, interval, start)
) WITHOUT ROWID;

-- The users each bucket of the service's and the movies' series counts, so
-- that a user counts once however their events fall.
CREATE TABLE series_viewers (
  scope    INTEGER NOT NULL,
  id       INTEGER NOT NULL,
  interval INTEGER NOT NULL,
  start    INTEGER NOT NULL,
  user_id  INTEGER NOT NULL,
  PRIMARY KEY (scope, id, interval, start, user_id)
) WITHOUT ROWID;
