-- SPEC section 7: the analytics, derived from the events by a follower off the
-- ingest path (src/analytics/follower.ts), the same tables as SQLite's
-- migration 5. A round reads events after its cursor and writes these tables
-- and the cursor in one transaction, so they always hold exactly the events up
-- to analytics_seq. A rebuild empties them and sets the cursor back to 0: the
-- follower derives them again from the events.
ALTER TABLE settings ADD COLUMN analytics_seq bigint NOT NULL DEFAULT 0;

-- Set by PUT /movies/{slug}; NULL: the duration is observed (the largest at).
-- Names are never rebuilt, so a duration is kept across a rebuild.
ALTER TABLE movies ADD COLUMN duration integer CHECK (duration > 0);

-- A pair as the follower left it: its own position (it trails the live
-- totals), its covered seconds as 32-bit little-endian [start, end) intervals
-- (src/store/analytics-rows.ts: encodeIntervals), and the receive times that
-- say who watches now and which buckets count the user.
CREATE TABLE pair_coverage (
  user_id          bigint  NOT NULL,
  movie_id         bigint  NOT NULL,
  position         integer NOT NULL,
  watched          bigint  NOT NULL,
  coverage         bigint  NOT NULL,
  furthest         integer NOT NULL,
  intervals        bytea   NOT NULL,
  last_received_at bigint  NOT NULL,
  last_credited_at bigint,
  -- A movie's pairs together, as on SQLite: its completed pairs are counted by
  -- reading them, which costs a stats query less than an index on coverage
  -- costs every round.
  PRIMARY KEY (movie_id, user_id)
);
-- Viewers now: pairs with an event in the last two minutes.
CREATE INDEX pair_coverage_by_received ON pair_coverage (last_received_at);

CREATE TABLE movie_coverage (
  movie_id bigint  PRIMARY KEY,
  viewers  bigint  NOT NULL,  -- pairs with coverage > 0
  coverage bigint  NOT NULL,
  watched  bigint  NOT NULL,
  events   bigint  NOT NULL,
  max_at   integer NOT NULL   -- the observed duration
);

-- Retention as changes: at `second`, `delta` more (or fewer) pairs cover it.
CREATE TABLE retention_changes (
  movie_id bigint  NOT NULL,
  second   integer NOT NULL,
  delta    bigint  NOT NULL,
  PRIMARY KEY (movie_id, second)
);

-- Time series: scope 0 the service (id 0), 1 a movie, 2 a user (minutes
-- only); interval 0 minute, 1 hour, 2 day; start in ms since the epoch.
CREATE TABLE series (
  scope    smallint NOT NULL,
  id       bigint   NOT NULL,
  interval smallint NOT NULL,
  start    bigint   NOT NULL,
  watched  bigint   NOT NULL,
  events   bigint   NOT NULL,
  viewers  bigint   NOT NULL,
  PRIMARY KEY (scope, id, interval, start)
);

-- The users each bucket of the service's and the movies' series counts, so
-- that a user counts once however their events fall.
CREATE TABLE series_viewers (
  scope    smallint NOT NULL,
  id       bigint   NOT NULL,
  interval smallint NOT NULL,
  start    bigint   NOT NULL,
  user_id  bigint   NOT NULL,
  PRIMARY KEY (scope, id, interval, start, user_id)
);

-- The follower's horizon (docs/postgres.md, "The analytics follower").
-- A batch takes its numbers in its first round trip and stores its events in
-- its second, so a batch may commit a lower number after another batch
-- committed a higher one. A follower that read `seq > cursor` and moved its
-- cursor past a number not yet committed would miss that event for ever. So
-- a round reads only up to follow_horizon, a number up to which every event
-- is committed or never will be:
-- - before a round, watchtime_follow_horizon() records the sequence's last
--   number as a candidate, and promotes the candidate to the horizon once it
--   is 250 ms old, holding the batches' lock (7477002) alone: no batch is
--   writing then, so every batch that took a number up to the candidate
--   either committed, or has not begun its write;
-- - and such a write fails (40001, below) once the horizon reached its
--   numbers, and its batch is tried again with new, higher numbers.
-- Ingest pays only for a batch whose two round trips were more than 250 ms
-- apart with a promotion between them; the analytics lag by the candidate's
-- age more.
ALTER TABLE settings ADD COLUMN follow_horizon bigint NOT NULL DEFAULT 0;
ALTER TABLE settings ADD COLUMN follow_candidate bigint;
ALTER TABLE settings ADD COLUMN follow_candidate_at timestamptz;

CREATE FUNCTION watchtime_follow_horizon() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- Most rounds find the candidate too young: they hold no batch back.
  IF NOT EXISTS (SELECT 1 FROM settings s WHERE s.id = 1
      AND (s.follow_candidate IS NULL OR s.follow_candidate_at <= clock_timestamp() - interval '250 milliseconds')) THEN
    RETURN;
  END IF;
  -- Alone: waits for the batches writing now, and holds the next ones back until commit.
  PERFORM pg_advisory_xact_lock(7477002);
  -- Checked again: another server's follower may have promoted meanwhile.
  UPDATE settings s SET
    follow_horizon = greatest(s.follow_horizon, coalesce(s.follow_candidate, 0)),
    follow_candidate = (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_seq),
    follow_candidate_at = clock_timestamp()
  WHERE s.id = 1 AND (s.follow_candidate IS NULL OR s.follow_candidate_at <= clock_timestamp() - interval '250 milliseconds');
END $$;

-- As in migration 3, but for the horizon: a batch whose numbers the follower
-- may have passed fails, and is tried again with new ones.
CREATE OR REPLACE FUNCTION watchtime_write_batch(
  batch_fence bigint,
  event_seqs bigint[], event_users bigint[], event_movies bigint[], event_ats integer[], event_received bigint[], event_ids text[],
  pair_users bigint[], pair_movies bigint[], pair_positions integer[], pair_watched bigint[], pair_events bigint[],
  pair_last_seqs bigint[], pair_updated bigint[], pair_read_seqs bigint[],
  movie_ids bigint[], movie_watched bigint[], movie_viewers bigint[], movie_events bigint[], movie_last_seqs bigint[],
  movie_updated bigint[], movie_part smallint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  written bigint;
  fence_now bigint;
  horizon bigint;
BEGIN
  -- Held until commit; a rebuild takes it alone (src/store/postgres.ts: BATCHES_LOCK), and so does the
  -- follower as it moves its horizon.
  PERFORM pg_advisory_xact_lock_shared(7477002);
  SELECT s.fence, s.follow_horizon INTO fence_now, horizon FROM settings s WHERE s.id = 1;
  IF fence_now <> batch_fence THEN
    RAISE EXCEPTION 'a rebuild started since the batch took its numbers' USING ERRCODE = '40001';
  END IF;
  IF (SELECT min(q) FROM unnest(event_seqs) AS q) <= horizon THEN
    RAISE EXCEPTION 'the analytics follower''s horizon passed the batch''s numbers' USING ERRCODE = '40001';
  END IF;

  INSERT INTO events (seq, user_id, movie_id, at, received_at, client_id)
  SELECT * FROM unnest(event_seqs, event_users, event_movies, event_ats, event_received, event_ids);

  -- New pairs (read as absent: no number read), in (user, movie) order so that two batches cannot deadlock here.
  INSERT INTO user_movies (user_id, movie_id, position, watched, events, last_seq, updated_at)
  SELECT p.u, p.m, p.pos, p.w, p.e, p.s, p.t
  FROM unnest(pair_users, pair_movies, pair_positions, pair_watched, pair_events, pair_last_seqs, pair_updated, pair_read_seqs)
    AS p(u, m, pos, w, e, s, t, r)
  WHERE p.r IS NULL ORDER BY p.u, p.m;

  -- The pairs come in (user, movie) order, as the new ones are inserted.
  UPDATE user_movies um SET position = p.pos, watched = p.w, events = p.e, last_seq = p.s, updated_at = p.t
  FROM unnest(pair_users, pair_movies, pair_positions, pair_watched, pair_events, pair_last_seqs, pair_updated, pair_read_seqs)
    AS p(u, m, pos, w, e, s, t, r)
  WHERE p.r IS NOT NULL AND um.user_id = p.u AND um.movie_id = p.m AND um.last_seq = p.r;
  GET DIAGNOSTICS written = ROW_COUNT;
  IF written <> (SELECT count(r) FROM unnest(pair_read_seqs) AS r) THEN
    RAISE EXCEPTION 'another batch wrote one of the batch''s pairs' USING ERRCODE = '40001';
  END IF;

  -- A movie's part is updated where it exists and inserted where not: an upsert locks each row, a WAL
  -- record, before it updates it. One statement, one snapshot: a part that another batch inserts and
  -- commits meanwhile is not updated here, so the insert meets it and adds to it (ON CONFLICT). Two
  -- batches that share a part (their connections' pids modulo 16 agree) meet on its rows in movie
  -- order when the plan follows the array; if not, PostgreSQL detects the deadlock and one is tried again.
  WITH updated AS (
    UPDATE movie_totals t SET watched = t.watched + d.w, viewers = t.viewers + d.v, events = t.events + d.e,
      -- Batches of one movie on other pairs may commit out of number order: keep the latest.
      updated_at = CASE WHEN d.s > t.last_seq THEN d.t ELSE t.updated_at END,
      last_seq = greatest(t.last_seq, d.s)
    FROM unnest(movie_ids, movie_watched, movie_viewers, movie_events, movie_last_seqs, movie_updated) AS d(m, w, v, e, s, t)
    WHERE t.movie_id = d.m AND t.part = movie_part
    RETURNING t.movie_id
  )
  INSERT INTO movie_totals AS t (movie_id, part, watched, viewers, events, last_seq, updated_at)
  SELECT d.m, movie_part, d.w, d.v, d.e, d.s, d.t
  FROM unnest(movie_ids, movie_watched, movie_viewers, movie_events, movie_last_seqs, movie_updated) AS d(m, w, v, e, s, t)
  WHERE d.m NOT IN (SELECT movie_id FROM updated)
  ORDER BY d.m
  ON CONFLICT (movie_id, part) DO UPDATE SET watched = t.watched + excluded.watched, viewers = t.viewers + excluded.viewers,
    events = t.events + excluded.events,
    updated_at = CASE WHEN excluded.last_seq > t.last_seq THEN excluded.updated_at ELSE t.updated_at END,
    last_seq = greatest(t.last_seq, excluded.last_seq);
END $$;

-- Where the analytics have got, for every answer to say with its figures
-- (in the same statement, so from the same snapshot): the last event
-- included, and how many are stored after it. Counted through the block-range
-- index while the follower is near (numbers taken since its cursor: at most
-- 100,000); further behind, after a rebuild, the numbers taken say it without
-- reading every event at each answer, counting the few numbers of batches that
-- failed and were tried again with new ones.
CREATE VIEW analytics_progress AS
SELECT s.analytics_seq AS as_of,
  CASE WHEN q.taken - s.analytics_seq <= 100000 THEN (SELECT count(*) FROM events e WHERE e.seq > s.analytics_seq)
    ELSE q.taken - s.analytics_seq END AS lag_events,
  s.accounting, s.max_step
FROM settings s, (SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS taken FROM event_seq) q
WHERE s.id = 1;
