//! One conversation with a page of its messages: the newest `limit` (oldest first), and a
//! cursor to page back. Keyset on `messages (conversation_id, occurred_at, idempotency_key)`,
//! so a page costs the same at 20 or 200,000 messages.

use sqlx::PgPool;
use uuid::Uuid;

use super::Cursor;
use crate::store::{self, ConversationBundle};

/// Messages in a page when the caller does not say.
pub const DEFAULT_MESSAGES: usize = 50;
/// Most messages in a page.
pub const MAX_MESSAGES: usize = 500;

/// Which messages to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    /// Only messages sorted before this one (a `nextCursor`).
    pub before: Option<Cursor>,
    /// `None`: all of them (tools and tests, never the API).
    pub limit: Option<usize>,
}

impl MessagePage {
    pub fn all() -> Self {
        MessagePage { before: None, limit: None }
    }

    pub fn newest(limit: usize) -> Self {
        MessagePage { before: None, limit: Some(limit) }
    }
}

/// `None` when the conversation does not exist in this project.
pub async fn conversation_page(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
    page: &MessagePage,
) -> Result<Option<ConversationBundle>, sqlx::Error> {
    let Some(row) = sqlx::query(&format!("{} WHERE c.id = $1 AND c.project_id = $2", store::CONVERSATION_SELECT))
        .bind(conversation_id)
        .bind(project_id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let conversation = store::conversation_view(&row);
    // Newest first, one more than asked to know whether older ones exist.
    let rows = sqlx::query(&format!(
        "SELECT {} FROM messages
          WHERE conversation_id = $1
            AND ($2::timestamptz IS NULL OR (occurred_at, idempotency_key) < ($2, $3))
          ORDER BY occurred_at DESC, idempotency_key DESC
          LIMIT $4",
        store::MESSAGE_COLUMNS
    ))
    .bind(conversation_id)
    .bind(page.before.as_ref().map(|c| c.at))
    .bind(page.before.as_ref().map(|c| c.tie.as_str()))
    .bind(page.limit.map(|l| l as i64 + 1))
    .fetch_all(pool)
    .await?;
    let has_more_messages = page.limit.is_some_and(|l| rows.len() > l);
    let mut messages: Vec<_> = rows.iter().take(page.limit.unwrap_or(usize::MAX)).map(store::message_view).collect();
    messages.reverse();
    let next_cursor = has_more_messages
        .then(|| messages.first().map(|m| Cursor { at: m.created_at, tie: m.id.clone() }.encode()))
        .flatten();
    let entry_points = store::conversation_entry_points(pool, conversation_id).await?;
    Ok(Some(ConversationBundle { conversation, messages, entry_points, has_more_messages, next_cursor }))
}
