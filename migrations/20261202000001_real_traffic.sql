-- Real traffic: what makes a message itself, updates waiting for their message, tenant-safe
-- entry points, and a caller's userId that the customer profile never overwrites.

-- The content fingerprint of a stored message (sender, subject, body, attachment hashes, the
-- channel's own time): the same idempotency key with another fingerprint is another message
-- (a reused Message-ID), stored under a derived key. NULL for messages stored before.
ALTER TABLE messages ADD COLUMN fingerprint text;

-- Edits, deletes and delivery statuses whose message has not arrived yet. Applied in the
-- transaction that inserts their message (or by the worker's sweeper), deleted when applied or
-- when older than INTAKE_PARKED_MAX_AGE.
CREATE TABLE parked_updates (
    id              bigserial PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    entry_point_id  uuid REFERENCES entry_points (id) ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    -- the update as JSON (intake_adapters::UpdateAction) and its SHA-256, so a redelivery
    -- is parked once
    action          jsonb NOT NULL,
    action_sha256   text NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, idempotency_key, action_sha256)
);
CREATE INDEX parked_updates_age_idx ON parked_updates (parked_at);

-- The first project to register an external channel id receives the traffic that names no
-- project (an MTA, a publisher without x-intake-project); later registrations of the same id
-- by other projects receive only traffic scoped to them (the gateway, x-intake-project).
ALTER TABLE entry_points ADD COLUMN receives_unscoped boolean NOT NULL DEFAULT false;
UPDATE entry_points e SET receives_unscoped = true
 WHERE NOT EXISTS (SELECT 1 FROM entry_points o
                    WHERE o.channel_type = e.channel_type AND o.external_channel_id = e.external_channel_id
                      AND (o.created_at, o.id) < (e.created_at, e.id));
CREATE UNIQUE INDEX entry_points_unscoped_owner_idx
    ON entry_points (channel_type, external_channel_id) WHERE receives_unscoped;

-- A userId the caller set (API) is theirs: the customer of the next inbound message does not
-- replace it.
ALTER TABLE conversations ADD COLUMN user_id_from_caller boolean NOT NULL DEFAULT false;
