//! The search entries of conversations (`conversation_search.document`: subject, customer name
//! and email, preview), written off the message path.
//!
//! The preview changes with every message, and a new conversation's trigram entries were half
//! of PostgreSQL's cost per message when most messages open one. Every statement that changes
//! the searched text appends the conversation to `conversation_search_queue` instead (new
//! conversations by a trigger, the message fold for every conversation it moves); [`refresh`]
//! takes the queue and writes one entry per conversation, however many messages it received
//! since. The list rechecks the current values, so an entry not yet refreshed can delay a match
//! by one refresh but never return a conversation that no longer matches.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a process that writes conversations refreshes the search entries.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Queue a conversation whose searched text a statement outside the message fold changed.
pub async fn queue(conn: &mut PgConnection, conversation_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO conversation_search_queue (conversation_id) VALUES ($1)")
        .bind(conversation_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Take the queue and write the queued conversations' current searched text; the number of entries
/// written. Safe to run from several processes at once: each queued row is taken once, and
/// entries are written in id order.
pub async fn refresh(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "WITH taken AS (DELETE FROM conversation_search_queue RETURNING conversation_id)
         INSERT INTO conversation_search AS s (conversation_id, project_id, document)
         SELECT c.id, c.project_id,
                coalesce(c.subject, '') || ' ' || coalesce(c.user_display_name, '') || ' '
                || coalesce(c.user_primary_email, '') || ' ' || coalesce(c.preview, '')
           FROM conversations c
          WHERE c.id IN (SELECT conversation_id FROM taken)
          ORDER BY c.id
         ON CONFLICT (conversation_id) DO UPDATE SET document = EXCLUDED.document
          WHERE s.document <> EXCLUDED.document",
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(written)
}

/// Refresh every [`REFRESH_EVERY`] until `stop`; a failure is logged and tried again.
pub async fn refresh_until(pool: PgPool, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = refresh(&pool).await {
            tracing::warn!(error = %e, "refreshing the conversation search entries failed; trying again");
        }
    }
}
