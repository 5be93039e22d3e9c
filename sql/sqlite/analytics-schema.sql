-- The analytics file (<db>-analytics) of SPEC section 7: what the follower
-- (src/analytics/follower-thread.ts) derives from the events of <db>. It
-- reads events after its cursor and writes these tables and the cursor in one
-- transaction, so they always hold exactly the events up to `cursor` of the
-- rebuild generation `generation`. Everything here can be derived again: a
-- file of another schema version, of another generation (a rebuild swapped
-- since) or whose last event is not the database's (a database put back from
-- a backup) is emptied and followed again from the first event.

CREATE TABLE IF NOT EXISTS follow_state (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  cursor     INTEGER NOT NULL,  -- the number of the last event included
  generation INTEGER NOT NULL,  -- <db>'s settings.generation it followed
  -- The event at `cursor` as it was followed (receive time, user, movie, at): a
  -- database put back from a backup numbers other events alike, and differs here.
  mark       TEXT    NOT NULL
);

-- A pair as the follower left it: its own position (it trails the live
-- totals), its covered seconds as 32-bit [start, end) intervals, and the
-- receive times that say who watches now and which buckets count the user.
CREATE TABLE IF NOT EXISTS pair_coverage (
  user_id          INTEGER NOT NULL,
  movie_id         INTEGER NOT NULL,
  position         INTEGER NOT NULL,
  watched          INTEGER NOT NULL,
  coverage         INTEGER NOT NULL,
  furthest         INTEGER NOT NULL,
  intervals        BLOB    NOT NULL,
  last_received_at INTEGER NOT NULL,
  last_credited_at INTEGER,
  -- A movie's pairs together: its completed pairs are counted by reading them,
  -- which costs a stats query less than an index on coverage costs every round.
  PRIMARY KEY (movie_id, user_id)
) WITHOUT ROWID;
-- Viewers now: pairs with an event in the last two minutes.
CREATE INDEX IF NOT EXISTS pair_coverage_by_received ON pair_coverage (last_received_at);

CREATE TABLE IF NOT EXISTS movie_coverage (
  movie_id INTEGER PRIMARY KEY,
  viewers  INTEGER NOT NULL,  -- pairs with coverage > 0
  coverage INTEGER NOT NULL,
  watched  INTEGER NOT NULL,
  events   INTEGER NOT NULL,
  max_at   INTEGER NOT NULL   -- the observed duration
);

-- Retention as changes: at `second`, `delta` more (or fewer) pairs cover it.
CREATE TABLE IF NOT EXISTS retention_changes (
  movie_id INTEGER NOT NULL,
  second   INTEGER NOT NULL,
  delta    INTEGER NOT NULL,
  PRIMARY KEY (movie_id, second)
) WITHOUT ROWID;

-- Time series: scope 0 the service (id 0), 1 a movie, 2 a user (minutes
-- only); interval 0 minute, 1 hour, 2 day; start in ms since the epoch.
CREATE TABLE IF NOT EXISTS series (
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
CREATE TABLE IF NOT EXISTS series_viewers (
  scope    INTEGER NOT NULL,
  id       INTEGER NOT NULL,
  interval INTEGER NOT NULL,
  start    INTEGER NOT NULL,
  user_id  INTEGER NOT NULL,
  PRIMARY KEY (scope, id, interval, start, user_id)
) WITHOUT ROWID;
