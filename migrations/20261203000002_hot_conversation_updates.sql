-- Issue 11: a new message's conversation update can be a HOT update (no new index entries).
--
-- An update is HOT only when no indexed column changes. Every message moved last_activity_at
-- (in four list indexes) and the preview (in the trigram search index), so each one wrote a new
-- entry into all eight indexes of conversations: about 75 µs of PostgreSQL CPU per message, the
-- largest single cost of a message.
--
-- The list's order now lives in a narrow table of its own, one row per conversation, written in
-- the same statement as the conversation (see update/bumps.rs) and on insert by the trigger
-- below; conversations keeps last_activity_at for reads.
CREATE TABLE conversation_activity (
    conversation_id  uuid PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    project_id       text NOT NULL,
    last_activity_at timestamptz NOT NULL
);
INSERT INTO conversation_activity (conversation_id, project_id, last_activity_at)
SELECT id, project_id, last_activity_at FROM conversations;
CREATE INDEX conversation_activity_list_idx
    ON conversation_activity (project_id, last_activity_at DESC, conversation_id DESC);

-- Every way a conversation is created (worker, API, fixtures) gets its row.
CREATE FUNCTION conversation_activity_opened() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO conversation_activity (conversation_id, project_id, last_activity_at)
    SELECT id, project_id, last_activity_at FROM opened;
    RETURN NULL;
END $$;
CREATE TRIGGER conversation_activity_opened AFTER INSERT ON conversations
    REFERENCING NEW TABLE AS opened FOR EACH STATEMENT EXECUTE FUNCTION conversation_activity_opened();

-- Filters by user and assignee: these change rarely, so their indexes no longer carry the
-- activity time (the few matching rows are sorted); status changes with most replies and is
-- filtered while walking the list in order.
DROP INDEX conversations_list_idx;
DROP INDEX conversations_status_list_idx;
DROP INDEX conversations_user_list_idx;
DROP INDEX conversations_assignee_list_idx;
CREATE INDEX conversations_user_idx ON conversations (project_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX conversations_assignee_idx ON conversations (project_id, assigned_to_user_id)
    WHERE assigned_to_user_id IS NOT NULL;

-- `query` searches subject, customer name and email: text that is set once, not the preview,
-- which changes with every message. GIN, which answers faster than GiST and costs nothing on
-- the write path while the row's update is HOT.
DROP INDEX conversations_search_idx;
CREATE INDEX conversations_search_idx ON conversations USING gin (
    (coalesce(subject, '') || ' ' || coalesce(user_display_name, '') || ' ' || coalesce(user_primary_email, ''))
    gin_trgm_ops);

-- The preview is searched too, but it changes with every message: its index lives in a table
-- of its own, refreshed off the message path from a queue the message path appends to
-- (store/search.rs, every second), so a burst of messages into a conversation costs one index
-- update, not one each. The list rechecks the current preview, so a stale entry never matches.
CREATE TABLE conversation_search (
    conversation_id uuid PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    project_id      text NOT NULL,
    preview         text NOT NULL
);
INSERT INTO conversation_search (conversation_id, project_id, preview)
SELECT id, project_id, preview FROM conversations WHERE preview IS NOT NULL;
CREATE INDEX conversation_search_preview_idx ON conversation_search USING gin (preview gin_trgm_ops);
-- Conversations whose preview may have changed since the last refresh; taken whole, no index.
CREATE TABLE conversation_search_queue (conversation_id uuid NOT NULL);
