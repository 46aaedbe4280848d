//! One update at a time: find or create the conversation, insert, fold.

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
        Some(UpdateAction::Append(message)) => {
            if let Some(existing) = find_message(conn, project, &message.idempotency_key).await? {
                return duplicate(request, existing);
            }
            let conversation_id = resolve_conversation(conn, request, message).await?;
            let Some(message_id) = insert_message(conn, request, conversation_id, message).await? else {
                // Lost a race with a concurrent copy of the same message.
                let existing = find_message(conn, project, &message.idempotency_key)
                    .await?
                    .ok_or_else(|| UpdateError::MessageNotFound(message.idempotency_key.clone()))?;
                return duplicate(request, existing);
            };
            if request.extras.pending_delivery {
                touch(conn, conversation_id, Utc::now()).await?;
            } else {
                bump_for_message(conn, conversation_id, message).await?;
            }
            if !request.attributes.is_empty() {
                update_attributes(conn, conversation_id, &request.attributes).await?;
            }
            tracing::debug!(%conversation_id, %message_id, key = %message.idempotency_key, "message appended");
            Ok(UpdateOutcome { conversation_id, message_id: Some(message_id), effect: Effect::Appended })
        }
        Some(action) => {
            let key = action_key(action);
            let (message_id, conversation_id) =
                find_message(conn, project, key).await?.ok_or_else(|| UpdateError::MessageNotFound(key.to_owned()))?;
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

/// The message with this idempotency key, or with this channel id (the Message-ID intake gave
/// a mail it sent: a copy of that mail coming back in is the same message).
pub(super) async fn find_message(
    conn: &mut PgConnection,
    project: &str,
    key: &str,
) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, conversation_id FROM messages
          WHERE project_id = $1 AND (idempotency_key = $2 OR external_id = $2)
          ORDER BY (idempotency_key = $2) DESC LIMIT 1",
    )
    .bind(project)
    .bind(key)
    .fetch_optional(conn)
    .await
}

pub(super) async fn lock_conversation(conn: &mut PgConnection, project: &str, id: Uuid) -> Result<(), UpdateError> {
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND project_id = $2 FOR UPDATE")
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
        let found: Option<Uuid> = sqlx::query_scalar(
            "WITH refs AS (SELECT * FROM unnest($3::text[]) WITH ORDINALITY AS r(key, pos)),
                  found AS (
                    SELECT m.conversation_id, refs.pos FROM refs
                      JOIN messages m ON m.project_id = $1 AND m.idempotency_key = refs.key
                    UNION ALL
                    SELECT m.conversation_id, refs.pos FROM refs
                      JOIN messages m ON m.project_id = $1 AND m.external_id = refs.key)
             SELECT found.conversation_id FROM found
               JOIN conversation_entry_points cep
                 ON cep.conversation_id = found.conversation_id AND cep.entry_point_id = $2
              ORDER BY found.pos DESC LIMIT 1",
        )
        .bind(project)
        .bind(entry_point_id)
        .bind(&thread.references)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = found {
            lock_conversation(conn, project, id).await?;
            return Ok(id);
        }
    }

    // Find or create by thread key; a message without one starts its own thread, keyed by the
    // message so that a redelivery finds the same conversation.
    let thread_key = thread.key.as_deref().unwrap_or(&message.idempotency_key);
    let new_id = Uuid::new_v4();
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
          WHERE origin_entry_point_id = $1 AND thread_key = $2 AND project_id = $3 FOR UPDATE",
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

/// Insert the message; `None` when a concurrent transaction inserted the same key first.
pub(super) async fn insert_message(
    conn: &mut PgConnection,
    request: &UpdateRequest,
    conversation_id: Uuid,
    message: &NormalizedMessage,
) -> Result<Option<Uuid>, UpdateError> {
    let entry_point_id = match &request.target {
        Target::Channel { entry_point_id, .. } => Some(*entry_point_id),
        Target::Conversation(_) => None,
    };
    let customer_id = if message.direction == Direction::Inbound && !message.is_auto_reply {
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
    let id = Uuid::new_v4();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (id, project_id, conversation_id, entry_point_id, idempotency_key, direction,
                               is_auto_reply, sender_id, sender_display_name, sender_primary_email, customer_id,
                               user_id, team_id, subject, body, attachments, metadata, occurred_at, delivery_state)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)
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
    .fetch_optional(conn)
    .await?;
    Ok(inserted)
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
