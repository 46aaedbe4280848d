-- Issue 11: no second-long stalls on the message path.
--
-- A GIN index with `fastupdate` collects new entries in a pending list and merges it into the
-- index when it passes gin_pending_list_limit (4 MB), inside whichever statement crossed the
-- limit. The search index on conversations gets entries from every conversation update that is
-- not HOT (a few percent), so now and then one worker batch paid for merging the whole list:
-- measured as one ~1.6 s stall per bench run (publish->commit p99 1.59 s at half load).
-- Without the pending list each such update pays for its own entries, a little each time.
-- The preview's index (conversation_search) keeps its pending list: only the refresh writes it.
ALTER INDEX conversations_search_idx SET (fastupdate = off);
SELECT gin_clean_pending_list('conversations_search_idx'::regclass);
