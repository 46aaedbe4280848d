//! Agent emails: queuing a stored message for the SMTP sender, and the resend route.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::auth::Project;
use super::error::ApiError;
use super::request::parse_conversation_id;
use super::AppState;
use crate::store;

/// Queue the send of a stored, pending agent email. The broker away: 503; the message stays
/// pending and repeating the request queues it again.
pub(super) async fn enqueue_send(
    queue: &crate::smtp::OutboundQueue,
    adapter_key: &str,
    project: &str,
    conversation_id: Uuid,
    key: &str,
) -> Result<(), ApiError> {
    let job = crate::smtp::SendJob::for_stored(project, conversation_id, key);
    queue.enqueue(adapter_key, &job).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the message is stored and pending, but could not be queued for sending ({e}); repeat the request"),
        )
    })
}

/// `POST /internal/conversations/{conversationId}/messages/{messageId}/resend`: send a failed
/// (or still pending) outbound email message again, with its Message-ID. 202 with the message.
#[tracing::instrument(skip_all, fields(project, conversation_id = %raw_id, message_id = %key))]
pub(super) async fn resend_message(
    State(state): State<AppState>,
    Project(project): Project,
    Path((raw_id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_conversation_id(&raw_id)?;
    let not_resendable = |m: String| ApiError::new(StatusCode::CONFLICT, "not_resendable", m);
    if store::load_message(&state.pool, &project, id, &key).await?.is_none() {
        return Err(ApiError::not_found("message"));
    }
    let Some(queue) = &state.outbound_email else {
        return Err(not_resendable("intake does not send email (INTAKE_SMTP_URL is not set)".into()));
    };
    let Some(adapter_key) = store::origin_email_adapter(&state.pool, &project, id).await? else {
        return Err(not_resendable("the conversation was not opened through an email entry point".into()));
    };
    match crate::smtp::prepare_resend(&state.pool, &project, id, &key).await? {
        crate::smtp::Resend::Ready => {}
        crate::smtp::Resend::NotFound => return Err(ApiError::not_found("message")),
        crate::smtp::Resend::NotResendable(state) => {
            return Err(not_resendable(match state {
                Some(state) => format!("the message is {state}; only failed or pending messages are sent again"),
                None => "the message is not an outbound email intake sends".into(),
            }))
        }
    }
    enqueue_send(queue, &adapter_key, &project, id, &key).await?;
    let message =
        store::load_message(&state.pool, &project, id, &key).await?.ok_or_else(|| ApiError::not_found("message"))?;
    Ok((StatusCode::ACCEPTED, Json(message)).into_response())
}
