-- Issue 11: a new conversation no longer pays for trigram index entries on the message path.
--
-- `conversations_search_idx` (trigrams of subject, customer name and email) took entries twice
-- for every new conversation: at its INSERT (subject) and at the first message's update (name
-- and email change, so that update cannot be HOT and every index takes an entry again). Each
-- entry is its own GIN insertion and WAL record: measured ~17 KB of WAL and about half of
-- PostgreSQL's time per message when most messages open a conversation (bench with
-- --conversations 20000: 4,188 msg/s with the index, 7,517 msg/s without it).
--
-- The searched text now lives in `conversation_search.document` (subject, name, email and
-- preview), written by the refresh that already kept the preview's entries (store/search.rs,
-- every second, one entry per queued conversation). New conversations are queued by the
-- trigger below; the message fold queues every conversation it moves (name, email, preview);
-- the other statements that change the preview queue theirs. The list rechecks the current
-- values, so a stale entry can delay a match by one refresh but never return a conversation
-- that no longer matches.
DROP INDEX conversations_search_idx;

ALTER TABLE conversation_search RENAME COLUMN preview TO document;
ALTER INDEX conversation_search_preview_idx RENAME TO conversation_search_document_idx;
INSERT INTO conversation_search AS s (conversation_id, project_id, document)
SELECT c.id, c.project_id,
       coalesce(c.subject, '') || ' ' || coalesce(c.user_display_name, '') || ' '
       || coalesce(c.user_primary_email, '') || ' ' || coalesce(c.preview, '')
  FROM conversations c
ON CONFLICT (conversation_id) DO UPDATE SET document = EXCLUDED.document;

CREATE FUNCTION conversation_search_opened() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_search_queue (conversation_id) SELECT id FROM opened;
    RETURN NULL;
END $$;
CREATE TRIGGER conversation_search_opened AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS opened FOR EACH STATEMENT EXECUTE FUNCTION conversation_search_opened();
