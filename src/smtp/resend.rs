//! Re-sending a failed (or abandoned) outbound email: its message goes back to `pending`.

use sqlx::PgPool;
use uuid::Uuid;

use super::job::SendJob;
use super::status::status_request;
use crate::update;

/// What a resend request found.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// The message is pending (again): queue a job for it.
    Ready,
    NotFound,
    /// Not an outbound message intake delivers, or sending or sent already; the state.
    NotResendable(Option<String>),
}

/// Make a `failed` outbound email message `pending` again (a `pending` one stays so) for a
/// resend; it keeps its Message-ID. The caller queues the job.
pub async fn prepare_resend(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
    key: &str,
) -> Result<Resend, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let conversation: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = $1 AND project_id = $2 FOR UPDATE")
            .bind(conversation_id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
    if conversation.is_none() {
        return Ok(Resend::NotFound);
    }
    let message: Option<(Uuid, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, direction, delivery_state, coalesce(delivery_lease_until <= now(), false) FROM messages
          WHERE conversation_id = $1 AND project_id = $2 AND idempotency_key = $3 FOR UPDATE",
    )
    .bind(conversation_id)
    .bind(project_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, direction, state, lease_expired)) = message else { return Ok(Resend::NotFound) };
    // Failed, or claimed by a sender that died (its lease ran out): send it again.
    let resendable = match state.as_deref() {
        Some("failed") => true,
        Some("sending") => lease_expired,
        _ => false,
    };
    match (direction.as_str(), state.as_deref()) {
        ("outbound", Some("pending")) => Ok(Resend::Ready),
        ("outbound", _) if resendable => {
            sqlx::query(
                "UPDATE messages SET delivery_state = 'pending', delivery_owner = NULL, delivery_lease_until = NULL
                  WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let job = SendJob::for_stored(project_id, conversation_id, key);
            let request = status_request(&job, "pending", Some("resend requested".into()));
            match update::apply_in(&mut tx, &request).await {
                Ok(_) => {}
                Err(update::UpdateError::Database(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "could not record the delivery status"),
            }
            tx.commit().await?;
            Ok(Resend::Ready)
        }
        _ => Ok(Resend::NotResendable(state)),
    }
}
