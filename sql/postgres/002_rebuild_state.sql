-- `watchtime rebuild` runs as a process of its own beside the servers; it
-- says here how far it is, and a server reads it (GET /metrics) in one query.

-- Set by the swap, in the transaction that bumps the generation.
ALTER TABLE settings ADD COLUMN last_swap_at bigint;  -- ms since the epoch

-- The progress has a row of its own, not columns of settings: every batch
-- holds the settings row FOR SHARE, so an update of it waits for the batches
-- running and holds the next ones back. The rebuild writes this row once a
-- chunk; nothing else locks it.
CREATE TABLE rebuild_progress (
  id          integer PRIMARY KEY CHECK (id = 1),
  started_at  bigint,                     -- ms since the epoch; NULL once it swapped or failed
  done        bigint  NOT NULL DEFAULT 0, -- events applied, of
  total       bigint  NOT NULL DEFAULT 0, -- events to apply (grows while events arrive)
  progress_at bigint,                     -- ms since the epoch of its latest write: its heartbeat
  pid         integer,                    -- its process, to tell one that was killed
  host        text                        -- where that pid means something (host and pid namespace)
);
INSERT INTO rebuild_progress (id) VALUES (1);
