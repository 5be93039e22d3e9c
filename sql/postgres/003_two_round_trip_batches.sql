-- A batch in two round trips and about three WAL records an event, down from
-- about ten round trips and nine records (docs/postgres.md, "What a batch
-- costs"). The accounting rule stays in JS, shared with SQLite and rebuild:
-- these functions only read, number and write what the server computed.

-- A user's totals are the sums of the user's pairs, as on SQLite (its
-- migration 3): the pairs sit side by side under the user's key, and a row of
-- its own cost an upsert, two WAL records, an event.
DROP TABLE user_totals;

-- Updating a pair then changes no indexed column, so PostgreSQL writes it as a
-- heap-only tuple beside the old one, without an index entry. A user's movies
-- by recency are sorted at read time: a user has tens of pairs, not millions.
-- By what it holds, not its name: a rebuild's swap (LIKE ... INCLUDING ALL)
-- renamed it.
DO $$
DECLARE
  recent text;
BEGIN
  FOR recent IN SELECT indexname FROM pg_indexes
    WHERE schemaname = current_schema() AND tablename = 'user_movies' AND indexdef LIKE '%last_seq%'
  LOOP
    EXECUTE format('DROP INDEX %I', recent);
  END LOOP;
END $$;
ALTER TABLE user_movies SET (fillfactor = 80);
-- Placeholders that batches made to lock new pairs: batches no longer make them.
DELETE FROM user_movies WHERE events = 0;
ALTER TABLE movie_totals SET (fillfactor = 50);

-- Events are appended in number order, near enough: a block-range index finds
-- a rebuild's catch-up by number at a fraction of a b-tree's cost an insert
-- (a WAL record and a page an event). The sequence hands out each number once.
ALTER TABLE events DROP CONSTRAINT events_pkey;
CREATE INDEX events_by_seq ON events USING brin (seq);

-- Ids of names, added where missing. Outside a batch's transaction: ids never
-- change, so servers remember them and nothing needs locking.
CREATE FUNCTION watchtime_name_ids(user_names text[], movie_slugs text[]) RETURNS json
LANGUAGE plpgsql AS $$
BEGIN
  -- In name order, so that two servers adding the same new names cannot deadlock.
  INSERT INTO users (name) SELECT n FROM unnest(user_names) AS n ORDER BY n ON CONFLICT (name) DO NOTHING;
  INSERT INTO movies (slug) SELECT s FROM unnest(movie_slugs) AS s ORDER BY s ON CONFLICT (slug) DO NOTHING;
  -- A statement of its own sees the names other servers committed meanwhile.
  RETURN json_build_object(
    'users', (SELECT coalesce(json_agg(json_build_array(name, id)), '[]') FROM users WHERE name = ANY(user_names)),
    'movies', (SELECT coalesce(json_agg(json_build_array(slug, id)), '[]') FROM movies WHERE slug = ANY(movie_slugs)));
END $$;

-- Bumped by a rebuild each time it takes the last number committed: a batch
-- that took its numbers before a bump is tried again (watchtime_write_batch).
ALTER TABLE settings ADD COLUMN fence bigint NOT NULL DEFAULT 0;

-- PL/pgSQL keeps each statement's plan for the connection. A plan made while
-- a table was still empty (a new database) reads it whole; the next ANALYZE,
-- which autovacuum runs within a minute of writes, has it planned again.

-- The first round trip of a batch, which locks nothing: the rule and the
-- fence, the client ids already stored, the stored state of the batch's
-- pairs, and then, after that read, the events' numbers.
CREATE FUNCTION watchtime_read_batch(user_ids bigint[], movie_ids bigint[], client_ids text[], event_count integer) RETURNS json
LANGUAGE plpgsql AS $$
DECLARE
  rule json;
  known json;
  pairs json;
  seqs json;
BEGIN
  SELECT json_build_object('accounting', accounting, 'maxStep', max_step, 'fence', fence) INTO rule FROM settings WHERE id = 1;
  IF cardinality(client_ids) > 0 THEN
    SELECT json_agg(client_id) INTO known FROM events WHERE client_id = ANY(client_ids);
  END IF;
  SELECT json_agg(json_build_array(um.user_id, um.movie_id, um.position, um.watched, um.events, um.last_seq, um.updated_at)) INTO pairs
  FROM unnest(user_ids, movie_ids) AS k(u, m) JOIN user_movies um ON um.user_id = k.u AND um.movie_id = k.m;
  -- A statement of its own, after the read: a number taken here is higher than any the pairs hold.
  SELECT json_agg(nextval('event_seq')) INTO seqs FROM generate_series(1, event_count);
  RETURN json_build_object('rule', rule, 'known', coalesce(known, '[]'), 'pairs', coalesce(pairs, '[]'), 'seqs', coalesce(seqs, '[]'));
END $$;

-- The second round trip, one transaction: the events, the pairs' new states
-- and the movies' deltas. A stored pair is written only where its last number
-- is still the one the first round trip read, and a new pair is inserted
-- where none exists; otherwise another batch wrote the pair meanwhile, and
-- the whole batch fails (40001, or 23505 for a pair inserted meanwhile) and
-- is tried again from the first round trip, with new numbers. So a pair's
-- events are applied in the order of their numbers with no lock held between
-- the round trips. A batch holds the batches' lock shared, which a rebuild
-- takes alone, and fails if the fence moved since it took its numbers.
CREATE FUNCTION watchtime_write_batch(
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
BEGIN
  -- Held until commit; a rebuild takes it alone (src/store/postgres.ts: BATCHES_LOCK).
  PERFORM pg_advisory_xact_lock_shared(7477002);
  IF (SELECT s.fence FROM settings s WHERE s.id = 1) <> batch_fence THEN
    RAISE EXCEPTION 'a rebuild started since the batch took its numbers' USING ERRCODE = '40001';
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
