//! Edits, deletes and delivery statuses of stored messages.

use super::*;
use chrono::{DateTime, Utc};
use intake_adapters::{preview_of, Direction, NormalizedMessage, UpdateAction};
use sqlx::PgConnection;
use uuid::Uuid;

/// Edit, delete or record a delivery status on a stored message, forward-only by time.
pub(super) async fn change_message(
    conn: &mut PgConnection,
    message_id: Uuid,
    conversation_id: Uuid,
    action: &UpdateAction,
) -> Result<(), sqlx::Error> {
    let at = match action {
        UpdateAction::Edit { idempotency_key, body, edited_at } => {
            let applied = sqlx::query(
                "UPDATE messages SET body = $2, updated_at = now(),
                        metadata = metadata || jsonb_build_object('editedAt', $3::timestamptz)
                  WHERE id = $1 AND (metadata->>'editedAt' IS NULL OR (metadata->>'editedAt')::timestamptz < $3)
                    AND metadata->>'deletedAt' IS NULL",
            )
            .bind(message_id)
            .bind(body)
            .bind(edited_at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if applied > 0 {
                sqlx::query("UPDATE conversations SET preview = $3 WHERE id = $1 AND preview_key = $2")
                    .bind(conversation_id)
                    .bind(idempotency_key)
                    .bind(preview_of(body, PREVIEW_CHARS))
                    .execute(&mut *conn)
                    .await?;
                crate::store::search::queue(conn, conversation_id).await?;
            }
            *edited_at
        }
        UpdateAction::Delete { idempotency_key, deleted_at } => {
            sqlx::query(
                "UPDATE messages SET body = '', updated_at = now(),
                        metadata = (metadata - 'previewText') || jsonb_build_object('deletedAt', $2::timestamptz)
                  WHERE id = $1 AND metadata->>'deletedAt' IS NULL",
            )
            .bind(message_id)
            .bind(deleted_at)
            .execute(&mut *conn)
            .await?;
            unpreview(conn, conversation_id, idempotency_key).await?;
            *deleted_at
        }
        UpdateAction::Status { status, at, detail, .. } => {
            sqlx::query(
                "UPDATE messages SET updated_at = now(),
                        metadata = metadata || jsonb_build_object('deliveryStatus', $2::text,
                                   'deliveryStatusAt', $3::timestamptz, 'deliveryDetail', $4::text)
                  WHERE id = $1 AND direction = 'outbound' AND (metadata->>'deliveryStatusAt' IS NULL
                                     OR (metadata->>'deliveryStatusAt')::timestamptz <= $3)",
            )
            .bind(message_id)
            .bind(status)
            .bind(at)
            .bind(detail)
            .execute(&mut *conn)
            .await?;
            if status == STATUS_SENT || status == STATUS_FAILED {
                settle_pending(conn, message_id, conversation_id, status, *at).await?;
            }
            *at
        }
        UpdateAction::Append(_) => unreachable!("appends are handled by apply_in"),
    };
    touch(conn, conversation_id, at).await
}

/// A deleted message's text must not stay in the conversation list: when the preview came
/// from it, the newest remaining message takes its place (preview, its key and time together,
/// so later deletes and edits of that message keep following it), or nothing.
async fn unpreview(conn: &mut PgConnection, conversation_id: Uuid, key: &str) -> Result<(), sqlx::Error> {
    let shows_it: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1 AND preview_key = $2)")
            .bind(conversation_id)
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
    if !shows_it {
        return Ok(());
    }
    let newest: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT coalesce(metadata->>'previewText', body), idempotency_key, occurred_at FROM messages
          WHERE conversation_id = $1 AND metadata->>'deletedAt' IS NULL AND message_type = 'message'
            AND coalesce(delivery_state, 'sent') = 'sent'
          ORDER BY occurred_at DESC, idempotency_key DESC LIMIT 1",
    )
    .bind(conversation_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (preview, preview_key, preview_at) = match newest {
        Some((text, key, at)) => (Some(preview_of(&text, PREVIEW_CHARS)), Some(key), Some(at)),
        None => (None, None, None),
    };
    sqlx::query(
        "UPDATE conversations SET preview = $2, preview_key = $3, preview_at = $4, updated_at = now() WHERE id = $1",
    )
    .bind(conversation_id)
    .bind(preview)
    .bind(preview_key)
    .bind(preview_at)
    .execute(&mut *conn)
    .await?;
    crate::store::search::queue(conn, conversation_id).await?;
    Ok(())
}

/// The stored message a settled delivery status refers to.
#[derive(sqlx::FromRow)]
pub(super) struct SettledRow {
    idempotency_key: String,
    direction: String,
    is_auto_reply: bool,
    subject: Option<String>,
    body: String,
    metadata: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

/// A pending outbound message (or one being sent: `sending`, claimed by an SMTP sender) was
/// accepted (or refused) by its channel; the claim ends. Sent: it now counts, at the time it
/// was accepted, for every timestamp.
pub(super) async fn settle_pending(
    conn: &mut PgConnection,
    message_id: Uuid,
    conversation_id: Uuid,
    status: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let sent = status == STATUS_SENT;
    let row: Option<SettledRow> = sqlx::query_as(
        "UPDATE messages SET delivery_state = $2, occurred_at = CASE WHEN $3 THEN $4 ELSE occurred_at END,
                delivery_owner = NULL, delivery_lease_until = NULL
          WHERE id = $1 AND delivery_state IN ('pending', 'sending')
          RETURNING idempotency_key, direction, is_auto_reply, subject, body, metadata, occurred_at",
    )
    .bind(message_id)
    .bind(status)
    .bind(sent)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(()) };
    if sent {
        let message = NormalizedMessage {
            idempotency_key: row.idempotency_key,
            direction: row.direction.parse().unwrap_or(Direction::Outbound),
            sender: Default::default(),
            subject: row.subject,
            body: row.body,
            attachments: vec![],
            occurred_at: row.occurred_at,
            is_auto_reply: row.is_auto_reply,
            metadata: row.metadata.as_object().cloned().unwrap_or_default(),
            fingerprint: None,
        };
        bump_for_message(conn, conversation_id, &message, None).await?; // outbound: no customer
    }
    Ok(())
}

/// Something happened on the conversation that is not a message.
pub(super) async fn touch(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH moved AS (UPDATE conversations SET last_activity_at = GREATEST(last_activity_at, $2), updated_at = now()
                         WHERE id = $1 RETURNING id, last_activity_at)
         UPDATE conversation_activity a SET last_activity_at = moved.last_activity_at FROM moved
          WHERE a.conversation_id = moved.id AND a.last_activity_at <> moved.last_activity_at",
    )
    .bind(conversation_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}
