-- Issue 11: the cost per stored message.
--
-- firstResponseAt was recomputed for every new message by two subqueries that re-read the
-- conversation's messages. The time of the first customer message is now kept on the row, so a
-- new message moves firstResponseAt by comparison; only a customer message older than every
-- earlier one (out-of-order arrival) still reads the conversation's messages.
ALTER TABLE conversations ADD COLUMN first_customer_message_at timestamptz;
UPDATE conversations c SET first_customer_message_at = f.at
  FROM (SELECT conversation_id, min(occurred_at) AS at FROM messages
         WHERE direction = 'inbound' AND NOT is_auto_reply AND message_type = 'message'
         GROUP BY conversation_id) f
 WHERE f.conversation_id = c.id;

-- Served those subqueries only; the rare recomputation uses messages_conversation_idx.
DROP INDEX messages_first_response_idx;

-- A foreign key is a row-level trigger and a lookup per inserted message. These three never
-- act: intake deletes no project, entry point or customer (a project's conversations cascade
-- to their messages through messages_conversation_id_fkey, which stays).
ALTER TABLE messages DROP CONSTRAINT messages_project_id_fkey,
                     DROP CONSTRAINT messages_entry_point_id_fkey,
                     DROP CONSTRAINT messages_customer_id_fkey;

-- Room on each page for the new version of a row, so an update that changes no indexed
-- column stays on its page (a HOT update: no new index entries).
ALTER TABLE conversations SET (fillfactor = 80);
