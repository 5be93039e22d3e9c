-- The PostgreSQL store: the same tables as SQLite's, for several servers at
-- once. Events are the source of truth; the rest is derived from them.

CREATE TABLE settings (
  id         integer PRIMARY KEY CHECK (id = 1),
  accounting text    NOT NULL CHECK (accounting IN ('progress', 'sum')),
  max_step   integer NOT NULL CHECK (max_step > 0),
  generation integer NOT NULL DEFAULT 0  -- bumped by every rebuild
);

CREATE TABLE users (
  id   bigserial PRIMARY KEY,
  name text      NOT NULL UNIQUE
);

CREATE TABLE movies (
  id   bigserial PRIMARY KEY,
  slug text      NOT NULL UNIQUE
);

-- seq orders each pair's events: it is taken while the batch holds the locks of its pairs.
CREATE SEQUENCE event_seq;

CREATE TABLE events (
  seq         bigint  PRIMARY KEY,
  user_id     bigint  NOT NULL,
  movie_id    bigint  NOT NULL,
  at          integer NOT NULL,
  received_at bigint  NOT NULL,  -- milliseconds since the Unix epoch
  client_id   text
);
CREATE UNIQUE INDEX events_by_client_id ON events (client_id) WHERE client_id IS NOT NULL;

-- A row with events = 0 is a placeholder that a batch made to lock a new pair;
-- it holds no event yet, and reads never show it.
CREATE TABLE user_movies (
  user_id    bigint  NOT NULL,
  movie_id   bigint  NOT NULL,
  position   integer NOT NULL,
  watched    bigint  NOT NULL,
  events     bigint  NOT NULL,
  last_seq   bigint  NOT NULL,
  updated_at bigint  NOT NULL,
  PRIMARY KEY (user_id, movie_id)
);
CREATE INDEX user_movies_recent ON user_movies (user_id, last_seq DESC);

CREATE TABLE user_totals (
  user_id    bigint PRIMARY KEY,
  watched    bigint NOT NULL,
  movies     bigint NOT NULL,
  events     bigint NOT NULL,
  last_seq   bigint NOT NULL,
  updated_at bigint NOT NULL
);

-- A movie's totals in parts, one for each connection slot that writes it, so
-- that servers taking events for a movie everyone watches do not queue on one
-- row. A movie's totals are the sums of its parts.
CREATE TABLE movie_totals (
  movie_id   bigint   NOT NULL,
  part       smallint NOT NULL,
  watched    bigint   NOT NULL,
  viewers    bigint   NOT NULL,
  events     bigint   NOT NULL,
  last_seq   bigint   NOT NULL,
  updated_at bigint   NOT NULL,
  PRIMARY KEY (movie_id, part)
);
