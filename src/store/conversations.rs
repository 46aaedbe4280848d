//! Reading conversations (paged), creating them, and what the outbound mail path asks.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::entry_points::{entry_point_from_row, EntryPointView};

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationMetadataView {
    pub tags: Vec<String>,
    pub assigned_to_user_id: Option<String>,
    pub assigned_to_display_name: Option<String>,
    pub first_response_due_at: Option<DateTime<Utc>>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub next_response_due_at: Option<DateTime<Utc>>,
    pub last_customer_reply_at: Option<DateTime<Utc>>,
    pub last_agent_reply_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub conversation_id: Uuid,
    /// `open`, `pending` (an agent answered last) or `closed`.
    pub status: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// The caller's `source` (POST), else the channel type it was opened through, else `api`.
    pub source: String,
    /// `messageType` of the newest message; null without messages.
    pub last_message_type: Option<String>,
    pub subject: Option<String>,
    pub last_activity_at: DateTime<Utc>,
    pub metadata: ConversationMetadataView,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub user_display_name: Option<String>,
    pub user_primary_email: Option<String>,
    pub user_profile_image_url: Option<String>,
    pub preview: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub record_metadata: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SenderView {
    /// `user` (the customer), `agent`, or `system` (status changes).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub sender_type: &'static str,
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub primary_email: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub conversation_id: Uuid,
    pub subject: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub attachments: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub sender: SenderView,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub body: String,
    /// `message`, `internal-note` or `status-change`.
    pub message_type: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// The response body of the conversations API: the conversation, a page of its messages
/// (the newest, oldest first) and its entry points.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationBundle {
    pub conversation: ConversationView,
    pub messages: Vec<MessageView>,
    pub entry_points: Vec<EntryPointView>,
    /// Older messages exist than the first one returned.
    pub has_more_messages: bool,
    /// `before` for the page of older messages; null when there are none.
    pub next_cursor: Option<String>,
}

/// Load a conversation with all its messages (oldest first) and entry points; `None` when it
/// does not exist in this project. For tools and tests: the API reads pages
/// ([`crate::read::conversation_page`]).
pub async fn load_conversation(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
) -> Result<Option<ConversationBundle>, sqlx::Error> {
    crate::read::conversation_page(pool, project_id, conversation_id, &crate::read::MessagePage::all()).await
}

/// Reads a conversation (`c`) with what [`conversation_view`] derives.
pub(crate) const CONVERSATION_SELECT: &str = "SELECT c.*,
        coalesce(c.source, (SELECT ep.channel_type FROM entry_points ep WHERE ep.id = c.origin_entry_point_id),
                 'api') AS source_name,
        (SELECT m.message_type FROM messages m WHERE m.conversation_id = c.id
          ORDER BY m.occurred_at DESC, m.idempotency_key DESC LIMIT 1) AS last_message_type
   FROM conversations c";

/// A conversation row ([`CONVERSATION_SELECT`]) as the API shows it.
pub(crate) fn conversation_view(row: &sqlx::postgres::PgRow) -> ConversationView {
    ConversationView {
        conversation_id: row.get("id"),
        status: row.get("status"),
        priority: row.get("priority"),
        source: row.get("source_name"),
        last_message_type: row.get("last_message_type"),
        subject: row.get("subject"),
        last_activity_at: row.get("last_activity_at"),
        metadata: ConversationMetadataView {
            tags: row.get("tags"),
            assigned_to_user_id: row.get("assigned_to_user_id"),
            assigned_to_display_name: row.get("assigned_to_display_name"),
            first_response_due_at: row.get("first_response_due_at"),
            first_response_at: row.get("first_response_at"),
            next_response_due_at: row.get("next_response_due_at"),
            last_customer_reply_at: row.get("last_customer_reply_at"),
            last_agent_reply_at: row.get("last_agent_reply_at"),
        },
        user_id: row.get("user_id"),
        team_id: row.get("team_id"),
        user_display_name: row.get("user_display_name"),
        user_primary_email: row.get("user_primary_email"),
        user_profile_image_url: row.get("user_profile_image_url"),
        preview: row.get("preview"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        last_message_at: row.get("last_message_at"),
        last_inbound_at: row.get("last_inbound_at"),
        last_outbound_at: row.get("last_outbound_at"),
        closed_at: row.get("closed_at"),
        record_metadata: row.get("record_metadata"),
    }
}

/// The columns [`message_view`] reads.
pub(crate) const MESSAGE_COLUMNS: &str = "idempotency_key, conversation_id, subject, attachments, occurred_at, \
    sender_id, sender_display_name, sender_primary_email, user_id, team_id, body, metadata, direction, \
    is_auto_reply, id, delivery_state, external_id, message_type";

/// A message row ([`MESSAGE_COLUMNS`]) as the API shows it.
pub(crate) fn message_view(r: &sqlx::postgres::PgRow) -> MessageView {
    // direction and the auto-reply flag are not columns of the spec's message shape:
    // expose them in metadata where callers look for channel facts.
    let mut metadata: serde_json::Value = r.get("metadata");
    if let Some(map) = metadata.as_object_mut() {
        map.insert("direction".into(), serde_json::Value::String(r.get("direction")));
        let auto: bool = r.get("is_auto_reply");
        if auto {
            map.insert("autoReply".into(), map.get("autoReply").cloned().unwrap_or(true.into()));
        }
        let internal_id: Uuid = r.get("id");
        map.insert("intakeMessageId".into(), internal_id.to_string().into());
        if let Some(state) = r.get::<Option<String>, _>("delivery_state") {
            map.entry("deliveryStatus").or_insert(state.into());
        }
        if let Some(external) = r.get::<Option<String>, _>("external_id") {
            map.entry("messageId").or_insert(external.into());
        }
    }
    let message_type: String = r.get("message_type");
    let direction: String = r.get("direction");
    let sender_type = match (message_type.as_str(), direction.as_str()) {
        ("status-change", _) => "system",
        (_, "inbound") => "user",
        _ => "agent",
    };
    MessageView {
        id: r.get("idempotency_key"),
        conversation_id: r.get("conversation_id"),
        subject: r.get("subject"),
        attachments: r.get("attachments"),
        created_at: r.get("occurred_at"),
        sender: SenderView {
            sender_type,
            id: r.get("sender_id"),
            display_name: r.get("sender_display_name"),
            primary_email: r.get("sender_primary_email"),
        },
        user_id: r.get("user_id"),
        team_id: r.get("team_id"),
        body: r.get("body"),
        message_type,
        metadata,
    }
}

/// One message of a conversation by its idempotency key.
pub async fn load_message(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
    key: &str,
) -> Result<Option<MessageView>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE project_id = $1 AND idempotency_key = $2 AND conversation_id = $3"
    ))
    .bind(project_id)
    .bind(key)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(message_view))
}

/// The entry points a conversation is reached through.
pub(crate) async fn conversation_entry_points(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Vec<EntryPointView>, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT e.id, e.channel_type, e.adapter_key, e.created_at, e.updated_at, e.external_channel_id,
                e.metadata, l.is_entry_point
           FROM conversation_entry_points l JOIN entry_points e ON e.id = l.entry_point_id
          WHERE l.conversation_id = $1 ORDER BY l.created_at, e.id",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| entry_point_from_row(r, r.get("is_entry_point")))
    .collect())
}

/// Create an empty conversation reached through `entry_point_id` (HTTP API).
pub async fn create_conversation(
    pool: &PgPool,
    project_id: &str,
    entry_point_id: Option<Uuid>,
    subject: Option<&str>,
    source: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(ep) = entry_point_id {
        let known: Option<Uuid> = sqlx::query_scalar("SELECT id FROM entry_points WHERE id = $1 AND project_id = $2")
            .bind(ep)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Ok(None);
        }
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO conversations (id, project_id, origin_entry_point_id, subject, source) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(project_id)
    .bind(entry_point_id)
    .bind(subject)
    .bind(source)
        .execute(&mut *tx)
        .await?;
    if let Some(ep) = entry_point_id {
        sqlx::query(
            "INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point) VALUES ($1, $2, true)",
        )
        .bind(id)
        .bind(ep)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(id))
}

/// The adapter key of the email entry point a conversation was opened through, if it was.
pub async fn origin_email_adapter(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT ep.adapter_key FROM conversations c JOIN entry_points ep ON ep.id = c.origin_entry_point_id
          WHERE c.id = $1 AND c.project_id = $2 AND ep.channel_type = 'email'",
    )
    .bind(conversation_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await
}

/// Whether a message still waits for delivery.
pub async fn is_pending(pool: &PgPool, project_id: &str, key: &str) -> Result<bool, sqlx::Error> {
    let state: Option<Option<String>> =
        sqlx::query_scalar("SELECT delivery_state FROM messages WHERE project_id = $1 AND idempotency_key = $2")
            .bind(project_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
    Ok(state.flatten().as_deref() == Some("pending"))
}
