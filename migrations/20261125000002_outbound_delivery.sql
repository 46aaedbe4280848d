-- Outbound messages that intake itself delivers (email over SMTP): the channel's own id for the
-- message when it differs from the idempotency key (the Message-ID intake generates), and the
-- delivery state. A pending message is stored but moves no conversation timestamp until sent.
ALTER TABLE messages ADD COLUMN external_id text;
ALTER TABLE messages ADD COLUMN delivery_state text CHECK (delivery_state IN ('pending', 'sent', 'failed'));
CREATE INDEX messages_external_id_idx ON messages (project_id, external_id) WHERE external_id IS NOT NULL;
