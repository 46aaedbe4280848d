//! Delivery statuses of outbound messages, recorded through the update logic.

use chrono::Utc;
use intake_adapters::UpdateAction;
use sqlx::PgPool;

use super::job::SendJob;
use crate::update::{self, MessageExtras, Target, UpdateRequest};

/// A transient failure recorded on the message while it waits for its retry.
pub const STATUS_DEFERRED: &str = "deferred";

pub(super) fn status_request(job: &SendJob, status: &str, detail: Option<String>) -> UpdateRequest {
    UpdateRequest {
        project_id: job.project_id.clone(),
        target: Target::Conversation(job.conversation_id),
        action: Some(UpdateAction::Status {
            idempotency_key: job.message_key.clone(),
            status: status.into(),
            at: Utc::now(),
            detail,
        }),
        extras: MessageExtras::default(),
        attributes: Default::default(),
    }
}

/// Record a delivery status on the message through the update logic (no claim involved).
pub async fn record_status(
    pool: &PgPool,
    job: &SendJob,
    status: &str,
    detail: Option<String>,
) -> Result<(), sqlx::Error> {
    let request = status_request(job, status, detail);
    match update::apply(pool, &request).await {
        Ok(_) => Ok(()),
        Err(update::UpdateError::Database(e)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not record the delivery status");
            Ok(())
        }
    }
}
