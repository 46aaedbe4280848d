-- Ingestion health (`src/health/`): each worker process upserts its tally here every few
-- seconds (its heartbeat) and deletes its row on a clean shutdown; the ops overview lists the
-- instances seen in the last minute.
CREATE TABLE worker_instances (
    instance       text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    started_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    batches        bigint NOT NULL DEFAULT 0,
    messages       bigint NOT NULL DEFAULT 0,
    dead_lettered  bigint NOT NULL DEFAULT 0,
    avg_batch_size double precision NOT NULL DEFAULT 0,
    avg_batch_ms   double precision NOT NULL DEFAULT 0
);
CREATE INDEX worker_instances_seen_idx ON worker_instances (last_seen_at);

-- The last time a message of an entry point was applied, written by the heartbeats (never on
-- the message path). Only moves forward.
CREATE TABLE entry_point_ingest (
    entry_point_id uuid PRIMARY KEY REFERENCES entry_points (id) ON DELETE CASCADE,
    last_ingest_at timestamptz NOT NULL
);
