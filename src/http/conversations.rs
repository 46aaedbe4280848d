//! The conversation routes: create one, read one with a page of its messages, and PATCH one
//! (messages, notes, status and attributes; agent emails are queued for sending).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use intake_adapters::{Direction, NormalizedMessage, Sender, UpdateAction};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::auth::Project;
use super::error::ApiError;
use super::outbound_email::enqueue_send;
use super::patch_body::PatchConversationBody;
use super::request::{
    check_project_id, from_json, parse_body, parse_conversation_id, parse_json, parse_limit, parse_query,
};
use super::{typed_bodies, AppState};
use crate::read::{self, MessagePage};
use crate::store;
use crate::update::{self, AttributeChanges, MessageExtras, MessageType, Priority, Target, UpdateRequest};

/// `?before=<nextCursor>&limit=N` of the conversation routes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagePageQuery {
    before: Option<String>,
    limit: Option<String>,
}

impl MessagePageQuery {
    fn page(&self) -> Result<MessagePage, ApiError> {
        let limit = parse_limit(self.limit.as_deref(), read::DEFAULT_MESSAGES, read::MAX_MESSAGES)?;
        let before = match &self.before {
            None => None,
            Some(raw) => Some(
                read::Cursor::decode(raw)
                    .ok_or_else(|| ApiError::bad_request("before: not a nextCursor this API returned"))?,
            ),
        };
        Ok(MessagePage { before, limit: Some(limit) })
    }
}

/// The conversation with a page of its messages (the newest `limit` unless `before` says).
async fn bundle(pool: &PgPool, project: &str, id: Uuid, page: &MessagePage) -> Result<Response, ApiError> {
    let bundle =
        read::conversation_page(pool, project, id, page).await?.ok_or_else(|| ApiError::not_found("conversation"))?;
    Ok(Json(bundle).into_response())
}

#[tracing::instrument(skip_all, fields(project, conversation_id = %raw_id))]
pub(super) async fn get_conversation(
    State(state): State<AppState>,
    Project(project): Project,
    Path(raw_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_conversation_id(&raw_id)?;
    let page = parse_query::<MessagePageQuery>(query.as_deref())?.page()?;
    bundle(&state.pool, &project, id, &page).await
}

#[tracing::instrument(skip_all, fields(project, conversation_id = %raw_id, message_id))]
pub(super) async fn patch_conversation(
    State(state): State<AppState>,
    Project(project): Project,
    Path(raw_id): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_conversation_id(&raw_id)?;
    let page = parse_query::<MessagePageQuery>(query.as_deref())?.page()?;
    let json = parse_json(body)?;
    // Stack Auth's clients send one of four bodies named by `type`; intake's own has no `type`.
    let mut request = if json.get("type").is_some() {
        typed_bodies::TypedPatchBody::parse(json)?.into_request(&project, id)?
    } else {
        from_json::<PatchConversationBody>(json)?.into_request(project.clone(), id)
    };
    let mut send_by_email = None;
    if let Some(UpdateAction::Append(m)) = &request.action {
        tracing::Span::current().record("message_id", m.idempotency_key.as_str());
        if m.direction == Direction::Outbound && request.extras.message_type == MessageType::Message {
            if let Some(queue) = &state.outbound_email {
                if let Some(adapter_key) = store::origin_email_adapter(&state.pool, &project, id).await? {
                    send_by_email = Some((queue.clone(), adapter_key, m.idempotency_key.clone()));
                    request.extras.pending_delivery = true;
                }
            }
        }
    }
    let outcome = update::apply(&state.pool, &request).await?;
    crate::metrics::record_api_update(outcome.effect);
    // Queue the send. A repeated PATCH queues it again while it is still pending (the first
    // job may have been lost); the sender's claim makes the extra job send nothing. Once the
    // message is being sent, sent or failed, a repeated PATCH queues nothing: a failed
    // message is sent again only through the resend route.
    if let Some((queue, adapter_key, key)) = send_by_email {
        if store::is_pending(&state.pool, &project, &key).await? {
            enqueue_send(&queue, &adapter_key, &project, outcome.conversation_id, &key).await?;
        }
    }
    bundle(&state.pool, &project, outcome.conversation_id, &page).await
}

/// intake's `{entryPointId, subject}` or Stack Auth's `{projectId, userId, subject,
/// initialMessage, priority, source}`, or any mix.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateConversationBody {
    project_id: Option<String>,
    entry_point_id: Option<Uuid>,
    subject: Option<String>,
    /// The customer the conversation is with.
    user_id: Option<String>,
    /// The customer's first message (inbound, from `userId`); trimmed, must not be empty.
    initial_message: Option<String>,
    priority: Option<Priority>,
    /// Free text, e.g. `chat`, `email`, `manual`; default: the entry point's channel type, else `api`.
    source: Option<String>,
}

pub(super) async fn create_conversation(
    State(state): State<AppState>,
    Project(project): Project,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CreateConversationBody = parse_body(body)?;
    check_project_id(body.project_id.as_deref(), &project)?;
    let initial_message = match body.initial_message.as_deref().map(str::trim) {
        Some("") => return Err(ApiError::bad_request("initialMessage: must not be empty")),
        other => other.map(str::to_owned),
    };
    let id = store::create_conversation(
        &state.pool,
        &project,
        body.entry_point_id,
        body.subject.as_deref(),
        body.source.as_deref(),
    )
    .await?
    .ok_or_else(|| ApiError::bad_request("entryPointId: no such entry point in this project"))?;
    // Everything else is an ordinary update of the new conversation.
    let attributes =
        AttributeChanges { user_id: body.user_id.clone().map(Some), priority: body.priority, ..Default::default() };
    let action = initial_message.map(|text| {
        UpdateAction::Append(NormalizedMessage {
            idempotency_key: format!("initial:{id}"),
            direction: Direction::Inbound,
            sender: Sender { id: body.user_id.clone(), ..Default::default() },
            subject: body.subject.clone(),
            body: text,
            attachments: vec![],
            occurred_at: Utc::now(),
            is_auto_reply: false,
            metadata: Default::default(),
            fingerprint: None,
        })
    });
    if action.is_some() || !attributes.is_empty() {
        let request = UpdateRequest {
            project_id: project.clone(),
            target: Target::Conversation(id),
            action,
            extras: MessageExtras { user_id: body.user_id, reject_reused_key: true, ..Default::default() },
            attributes,
        };
        update::apply(&state.pool, &request).await?;
    }
    let mut response = bundle(&state.pool, &project, id, &MessagePage::newest(read::DEFAULT_MESSAGES)).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}
