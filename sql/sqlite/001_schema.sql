-- Events are the source of truth; users, movies and user_movies are derived
-- from them (watchtime rebuild recomputes them in one transaction).

-- The accounting rule the aggregates were computed under: one row.
CREATE TABLE settings (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  accounting TEXT    NOT NULL CHECK (accounting IN ('progress', 'sum')),
  max_step   INTEGER NOT NULL CHECK (max_step > 0)
);

-- A user or a movie is stored once and events refer to it by number, which
-- keeps an event row near 20 bytes whatever the length of the names.
CREATE TABLE users (
  id       INTEGER PRIMARY KEY,
  name     TEXT    NOT NULL UNIQUE,
  watched  INTEGER NOT NULL DEFAULT 0,
  movies   INTEGER NOT NULL DEFAULT 0,
  events   INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0  -- the user's most recent event
);

CREATE TABLE movies (
  id       INTEGER PRIMARY KEY,
  slug     TEXT    NOT NULL UNIQUE,
  watched  INTEGER NOT NULL DEFAULT 0,
  viewers  INTEGER NOT NULL DEFAULT 0,
  events   INTEGER NOT NULL DEFAULT 0,
  last_seq INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX movies_by_watched ON movies (watched DESC, id);

-- One row per (user, movie) pair: the resume point and the time credited.
CREATE TABLE user_movies (
  user_id  INTEGER NOT NULL REFERENCES users (id),
  movie_id INTEGER NOT NULL REFERENCES movies (id),
  position INTEGER NOT NULL,
  watched  INTEGER NOT NULL,
  events   INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;

-- seq is the arrival order the accounting follows.
CREATE TABLE events (
  seq         INTEGER PRIMARY KEY,
  user_id     INTEGER NOT NULL,
  movie_id    INTEGER NOT NULL,
  at          INTEGER NOT NULL,
  received_at INTEGER NOT NULL,  -- milliseconds since the Unix epoch
  client_id   TEXT
);

-- Partial, so events sent without an id cost no index entry.
CREATE UNIQUE INDEX events_by_client_id ON events (client_id) WHERE client_id IS NOT NULL;
