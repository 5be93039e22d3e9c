-- SPEC section 7. A movie's duration, set by PUT /movies/{slug}; NULL: the
-- duration is observed (the largest at). Names are never rebuilt, so a
-- duration is kept across a rebuild. The analytics themselves are derived
-- from the events into a file of their own beside this one (<db>-analytics,
-- sql/sqlite/analytics-schema.sql), so that deriving them never holds this
-- file's write lock.
ALTER TABLE movies ADD COLUMN duration INTEGER CHECK (duration > 0);
