//! The conversation list: a project's conversations, newest activity first, filtered, paged
//! by keyset cursor (and, for Stack Auth's clients, by offset).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::Cursor;
use crate::store::{self, ConversationView};

/// Conversations in a page when the caller does not say.
pub const DEFAULT_CONVERSATIONS: usize = 50;
/// Most conversations in a page.
pub const MAX_CONVERSATIONS: usize = 200;

/// What to list; every filter set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationFilter {
    pub status: Option<String>,
    pub user_id: Option<String>,
    pub assigned_to_user_id: Option<String>,
    pub tag: Option<String>,
    pub entry_point_id: Option<Uuid>,
    /// `updatedAt` at or after this.
    pub updated_since: Option<DateTime<Utc>>,
    /// Case-insensitive substring of subject, preview, customer name or email.
    pub query: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
    pub has_more: bool,
    /// `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The stable searched text of a conversation row (subject, customer name and email), for the
/// recheck; the index lookup goes through `conversation_search.document` (store/search.rs).
fn search_text(alias: &str) -> String {
    format!(
        "(coalesce({alias}.subject, '') || ' ' || coalesce({alias}.user_display_name, '') || ' ' \
         || coalesce({alias}.user_primary_email, ''))"
    )
}

pub async fn list_conversations(
    pool: &PgPool,
    project_id: &str,
    filter: &ConversationFilter,
    after: Option<&Cursor>,
    offset: usize,
    limit: usize,
) -> Result<ConversationList, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(store::CONVERSATION_SELECT);
    // Walked in the order of conversation_activity_list_idx (see migration 20261203000002).
    q.push(" JOIN conversation_activity a ON a.conversation_id = c.id WHERE a.project_id = ").push_bind(project_id);
    if let Some(status) = &filter.status {
        q.push(" AND c.status = ").push_bind(status);
    }
    if let Some(user_id) = &filter.user_id {
        q.push(" AND c.user_id = ").push_bind(user_id);
    }
    if let Some(assignee) = &filter.assigned_to_user_id {
        q.push(" AND c.assigned_to_user_id = ").push_bind(assignee);
    }
    if let Some(tag) = &filter.tag {
        q.push(" AND c.tags @> ARRAY[").push_bind(tag).push("]::text[]");
    }
    if let Some(ep) = filter.entry_point_id {
        q.push(" AND EXISTS (SELECT 1 FROM conversation_entry_points l WHERE l.conversation_id = c.id AND l.entry_point_id = ")
            .push_bind(ep)
            .push(")");
    }
    if let Some(since) = filter.updated_since {
        q.push(" AND c.updated_at >= ").push_bind(since);
    }
    if let Some(text) = filter.query.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        // One index scan of the search entries, then a recheck against the current values: an
        // entry not refreshed yet never returns a conversation that no longer matches (and a
        // match across the document's joins is not one).
        q.push(" AND c.id IN (SELECT p.conversation_id FROM conversation_search p WHERE p.project_id = ")
            .push_bind(project_id)
            .push(" AND p.document ILIKE ")
            .push_bind(pattern.clone())
            .push(format!(") AND ({} ILIKE ", search_text("c")))
            .push_bind(pattern.clone())
            .push(" OR c.preview ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(cursor) = after {
        let id = Uuid::parse_str(&cursor.tie).unwrap_or_default();
        q.push(" AND (a.last_activity_at, a.conversation_id) < (")
            .push_bind(cursor.at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY a.last_activity_at DESC, a.conversation_id DESC OFFSET ")
        .push_bind(offset as i64)
        .push(" LIMIT ")
        .push_bind(limit as i64 + 1);
    let rows = q.build().fetch_all(pool).await?;
    let has_more = rows.len() > limit;
    let conversations: Vec<_> = rows.iter().take(limit).map(store::conversation_view).collect();
    let next_cursor = has_more
        .then(|| conversations.last().map(|c| Cursor { at: c.last_activity_at, tie: c.conversation_id.to_string() }))
        .flatten()
        .map(|c| c.encode());
    Ok(ConversationList { conversations, has_more, next_cursor })
}
