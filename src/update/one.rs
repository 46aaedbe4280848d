//! One update at a time: find or create the conversation, insert, fold.

use std::borrow::Cow;

use super::parked::{park, unpark};
use super::*;
use chrono::Utc;
use intake_adapters::{Direction, NormalizedMessage, UpdateAction};
use sqlx::PgConnection;
use uuid::Uuid;

/// Apply one update inside the caller's transaction.
#[tracing::instrument(level = "debug", skip_all, fields(project = %request.project_id, key = request.action.as_ref().map(action_key)))]
pub async fn apply_in(conn: &mut PgConnection, request: &UpdateRequest) -> Result<UpdateOutcome, UpdateError> {
    validate(request)?;
    let project = request.project_id.as_str();
    match &request.action {
        Some(UpdateAction::Append(original)) => {
            let fingerprint = original.fingerprint();
            let mut message = Cow::Borrowed(original);
            // The key, then (another message reused it) its derived key; a lost insert race
            // looks again.
            for _ in 0..3 {
                if let Some(stored) = find_stored(conn, project, &message.idempotency_key).await? {
                    if stored.is_copy_of(&fingerprint) {
                        return duplicate(request, (stored.id, stored.conversation_id));
                    }
                    if request.extras.reject_reused_key {
                        return Err(UpdateError::KeyReused { key: original.idempotency_key.clone() });
                    }
                    message = Cow::Owned(with_derived_key(original, &fingerprint));
                    continue;
                }
                let conversation_id = resolve_conversation(conn, request, &message).await?;
                let Some((message_id, customer_id)) =
                    insert_message(conn, request, conversation_id, &message, &fingerprint).await?
                else {
                    continue; // a concurrent copy was inserted first
                };
                if request.extras.pending_delivery {
                    touch(conn, conversation_id, Utc::now()).await?;
                } else if request.extras.message_type == MessageType::InternalNote {
                    // Not a message of the conversation with the customer: activity only.
                    touch(conn, conversation_id, message.occurred_at).await?;
                } else {
                    bump_for_message(conn, conversation_id, &message, customer_id).await?;
                }
                if !request.attributes.is_empty() {
                    update_attributes(conn, conversation_id, &request.attributes).await?;
                }
                unpark(conn, &[(project, message.idempotency_key.as_str(), message_id, conversation_id)]).await?;
                tracing::debug!(%conversation_id, %message_id, key = %message.idempotency_key, "message appended");
                return Ok(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::Appended });
            }
            // Raced three times: let apply_batch run the transaction again.
            Err(UpdateError::Database(sqlx::Error::RowNotFound))
        }
        Some(action) => {
            let key = action_key(action);
            let is_status = matches!(action, UpdateAction::Status { .. });
            let Some((message_id, conversation_id)) = find_message(conn, project, key, is_status).await? else {
                return match &request.target {
                    // Channel traffic: the message may still come (a status overtaking its
                    // message, an edit of a message sent by another tool).
                    Target::Channel { entry_point_id, .. } => {
                        park(conn, project, *entry_point_id, action).await?;
                        Ok(UpdateOutcome { conversation_id: Uuid::nil(), message_id: None, effect: Effect::Parked })
                    }
                    Target::Conversation(_) => Err(UpdateError::MessageNotFound(key.to_owned())),
                };
            };
            if let Target::Conversation(target) = request.target {
                if target != conversation_id {
                    return Err(UpdateError::MessageNotFound(key.to_owned()));
                }
            }
            lock_conversation(conn, project, conversation_id).await?;
            change_message(conn, message_id, conversation_id, action).await?;
            if !request.attributes.is_empty() {
                update_attributes(conn, conversation_id, &request.attributes).await?;
            }
            Ok(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::MessageChanged })
        }
        None => {
            let Target::Conversation(conversation_id) = request.target else {
                return Err(UpdateError::Invalid("an update without a message needs a conversation id".into()));
            };
            lock_conversation(conn, project, conversation_id).await?;
            update_attributes(conn, conversation_id, &request.attributes).await?;
            Ok(UpdateOutcome { conversation_id, message_id: None, effect: Effect::AttributesChanged })
        }
    }
}

/// A stored message an appended one may be a copy of.
pub(super) struct StoredMessage {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// Found by its channel id (a mail intake sent, coming back), not by its key.
    pub by_external_id: bool,
    pub fingerprint: Option<String>,
}

impl StoredMessage {
    /// Whether a message with `fingerprint` under the same key is this one again. Found by
    /// channel id, or stored before fingerprints were: yes.
    pub fn is_copy_of(&self, fingerprint: &str) -> bool {
        self.by_external_id || self.fingerprint.as_deref().is_none_or(|f| f == fingerprint)
    }
}

/// [`find_message`] with what tells a copy from another message that reuses the key.
pub(super) async fn find_stored(
    conn: &mut PgConnection,
    project: &str,
    key: &str,
) -> Result<Option<StoredMessage>, sqlx::Error> {
    let row: Option<(Uuid, Uuid, bool, Option<String>)> = sqlx::query_as(
        "SELECT id, conversation_id, idempotency_key <> $2, fingerprint FROM messages
          WHERE project_id = $1 AND (idempotency_key = $2 OR external_id = $2)
          ORDER BY (idempotency_key = $2) DESC LIMIT 1",
    )
    .bind(project)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(id, conversation_id, by_external_id, fingerprint)| StoredMessage {
        id,
        conversation_id,
        by_external_id,
        fingerprint,
    }))
}

/// The message stored under a key derived from its own (`<key>#<fingerprint prefix>`), marked
/// `metadata.idempotencyKeyReused`: another message already has its key. A copy of it derives
/// the same key, so it is still recognised.
pub(super) fn with_derived_key(message: &NormalizedMessage, fingerprint: &str) -> NormalizedMessage {
    let mut derived = message.clone();
    derived.idempotency_key = format!("{}#{}", message.idempotency_key, &fingerprint[..16]);
    derived.metadata.insert("idempotencyKeyReused".into(), serde_json::Value::Bool(true));
    tracing::info!(key = %message.idempotency_key, derived = %derived.idempotency_key, "idempotency key reused by another message; stored under a derived key");
    derived
}

/// The message with this idempotency key, or with this channel id (the Message-ID intake gave
/// a mail it sent: a copy of that mail coming back in is the same message). Only outbound
/// messages when `outbound_only` (a delivery status is about a message we sent).
pub(super) async fn find_message(
    conn: &mut PgConnection,
    project: &str,
    key: &str,
    outbound_only: bool,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, conversation_id FROM messages
          WHERE project_id = $1 AND (idempotency_key = $2 OR external_id = $2)
            AND (NOT $3 OR direction = 'outbound')
          ORDER BY (idempotency_key = $2) DESC LIMIT 1",
    )
    .bind(project)
    .bind(key)
    .bind(outbound_only)
    .fetch_optional(conn)
    .await
}

pub(super) async fn lock_conversation(conn: &mut PgConnection, project: &str, id: Uuid) -> Result<(), UpdateError> {
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND project_id = $2 FOR NO KEY UPDATE")
        .bind(id)
        .bind(project)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or(UpdateError::ConversationNotFound)
}

/// Find the conversation a message belongs to, creating it when the channel starts one, and
/// lock it.
pub(super) async fn resolve_conversation(
    conn: &mut PgConnection,
    request: &UpdateRequest,
    message: &NormalizedMessage,
) -> Result<Uuid, UpdateError> {
    let project = request.project_id.as_str();
    let (entry_point_id, thread) = match &request.target {
        Target::Conversation(id) => {
            lock_conversation(conn, project, *id).await?;
            return Ok(*id);
        }
        Target::Channel { entry_point_id, thread } => (*entry_point_id, thread),
    };

    // A reply token the channel carried back, if it names a conversation of this project.
    if let Some(hint) = thread.conversation_id_hint.as_deref().and_then(|h| Uuid::parse_str(h).ok()) {
        if lock_conversation(conn, project, hint).await.is_ok() {
            link_entry_point(conn, hint, entry_point_id, false).await?;
            return Ok(hint);
        }
    }

    // A reference to an earlier message of this entry point's conversations; newest wins.
    if !thread.references.is_empty() {
        let asked = (project, entry_point_id, message.idempotency_key.as_str(), thread.references.as_slice());
        let found = newest_stored(conn, &[asked]).await?.pop().flatten();
        if let Some((_, id)) = found {
            lock_conversation(conn, project, id).await?;
            return Ok(id);
        }
    }

    // Find or create by thread key; a message without one starts its own thread, keyed by the
    // message so that a redelivery finds the same conversation.
    let thread_key = thread.key.as_deref().unwrap_or(&message.idempotency_key);
    let new_id = Uuid::now_v7();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO conversations (id, project_id, origin_entry_point_id, thread_key, subject, last_activity_at)
         VALUES ($1, $2, $3, $4, $5, GREATEST(now(), $6))
         ON CONFLICT (origin_entry_point_id, thread_key) WHERE thread_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(new_id)
    .bind(project)
    .bind(entry_point_id)
    .bind(thread_key)
    .bind(&message.subject)
    .bind(message.occurred_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        link_entry_point(conn, id, entry_point_id, true).await?;
        tracing::info!(conversation_id = %id, %entry_point_id, "conversation opened");
        return Ok(id);
    }
    let id: Uuid = sqlx::query_scalar(
        "SELECT id FROM conversations
          WHERE origin_entry_point_id = $1 AND thread_key = $2 AND project_id = $3 FOR NO KEY UPDATE",
    )
    .bind(entry_point_id)
    .bind(thread_key)
    .bind(project)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

pub(super) async fn link_entry_point(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    entry_point_id: Uuid,
    is_entry_point: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(conversation_id)
    .bind(entry_point_id)
    .bind(is_entry_point)
    .execute(conn)
    .await?;
    Ok(())
}

/// Insert the message; its id and customer, or `None` when a concurrent transaction inserted
/// the same key first.
pub(super) async fn insert_message(
    conn: &mut PgConnection,
    request: &UpdateRequest,
    conversation_id: Uuid,
    message: &NormalizedMessage,
    fingerprint: &str,
) -> Result<Option<(Uuid, Option<Uuid>)>, UpdateError> {
    let entry_point_id = match &request.target {
        Target::Channel { entry_point_id, .. } => Some(*entry_point_id),
        Target::Conversation(_) => None,
    };
    let customer_id = if message.direction == Direction::Inbound
        && !message.is_auto_reply
        && request.extras.message_type == MessageType::Message
    {
        upsert_customer(conn, &request.project_id, message).await?
    } else {
        None
    };
    let user_id = request
        .extras
        .user_id
        .clone()
        .or_else(|| customer_id.map(|c| c.to_string()))
        .or_else(|| (message.direction == Direction::Outbound).then(|| message.sender.id.clone()).flatten());
    let attachments = serde_json::to_value(&message.attachments).expect("attachments serialize");
    let id = Uuid::now_v7();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (id, project_id, conversation_id, entry_point_id, idempotency_key, direction,
                               is_auto_reply, sender_id, sender_display_name, sender_primary_email, customer_id,
                               user_id, team_id, subject, body, attachments, metadata, occurred_at, delivery_state,
                               fingerprint, message_type)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)
         ON CONFLICT (project_id, idempotency_key) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(&request.project_id)
    .bind(conversation_id)
    .bind(entry_point_id)
    .bind(&message.idempotency_key)
    .bind(message.direction.as_str())
    .bind(message.is_auto_reply)
    .bind(&message.sender.id)
    .bind(&message.sender.display_name)
    .bind(&message.sender.primary_email)
    .bind(customer_id)
    .bind(user_id)
    .bind(&request.extras.team_id)
    .bind(&message.subject)
    .bind(&message.body)
    .bind(attachments)
    .bind(serde_json::Value::Object(message.metadata.clone()))
    .bind(message.occurred_at)
    .bind(request.extras.pending_delivery.then_some("pending"))
    .bind(fingerprint)
    .bind(request.extras.message_type.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(inserted.map(|id| (id, customer_id)))
}

pub(super) async fn upsert_customer(
    conn: &mut PgConnection,
    project: &str,
    message: &NormalizedMessage,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Some(external_id) =
        message.sender.id.as_deref().or(message.sender.primary_email.as_deref()).filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    // The profile is "as last seen": newer non-empty values replace older ones.
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO customers (id, project_id, external_id, display_name, primary_email, profile_image_url)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (project_id, external_id) DO UPDATE SET
            display_name = COALESCE(EXCLUDED.display_name, customers.display_name),
            primary_email = COALESCE(EXCLUDED.primary_email, customers.primary_email),
            profile_image_url = COALESCE(EXCLUDED.profile_image_url, customers.profile_image_url),
            updated_at = now()
         RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(project)
    .bind(external_id)
    .bind(&message.sender.display_name)
    .bind(&message.sender.primary_email)
    .bind(&message.sender.profile_image_url)
    .fetch_one(conn)
    .await?;
    Ok(Some(id))
}
