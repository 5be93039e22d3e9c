-- `watchtime rebuild` runs as a process of its own beside the server; it says
-- here how far it is, and a server reads it (GET /metrics) in one row read.
-- The rebuild writes these columns in the transactions it already commits:
-- the start, one update with each chunk, the swap.
ALTER TABLE settings ADD COLUMN rebuild_started_at  INTEGER;  -- ms since the epoch; NULL once it swapped or failed
ALTER TABLE settings ADD COLUMN rebuild_done        INTEGER NOT NULL DEFAULT 0;  -- events applied, of
ALTER TABLE settings ADD COLUMN rebuild_total       INTEGER NOT NULL DEFAULT 0;  -- events to apply (grows while events arrive)
ALTER TABLE settings ADD COLUMN rebuild_progress_at INTEGER;  -- ms since the epoch of its latest write: its heartbeat
ALTER TABLE settings ADD COLUMN rebuild_pid         INTEGER;  -- its process, to tell one that was killed
ALTER TABLE settings ADD COLUMN rebuild_host        TEXT;     -- where that pid means something (host and pid namespace)
ALTER TABLE settings ADD COLUMN last_swap_at        INTEGER;  -- ms since the epoch of the last swap (with generation + 1)
