//! The internal HTTP API (axum): conversations, entry points, health and metrics.
//! Transport only: every change goes through [`crate::update`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use intake_adapters::{ChannelType, Direction, NormalizedMessage, Sender, UpdateAction};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::read::{self, MessagePage};
use crate::store::{self, EntryPointError};
use crate::update::{self, AttributeChanges, MessageExtras, MessageType, Priority, Target, UpdateError, UpdateRequest};

mod conversation_list;
mod openapi;
mod patch_body;
mod typed_bodies;

use patch_body::{double_option, PatchConversationBody};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub body_limit: usize,
    /// Set when intake sends email itself: outbound messages on email conversations are
    /// stored as pending and queued for the worker's SMTP sender.
    pub outbound_email: Option<std::sync::Arc<crate::smtp::OutboundQueue>>,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    crate::metrics::handle(); // install the recorder before anything counts
    Router::new()
        .route("/internal/conversations", post(create_conversation).get(conversation_list::list_conversations))
        .route("/internal/conversations/{conversation_id}", get(get_conversation).patch(patch_conversation))
        .route("/internal/conversations/{conversation_id}/messages/{message_id}/resend", post(resend_message))
        .route("/internal/entry-points", post(create_entry_point).get(list_entry_points))
        .route("/internal/entry-points/{entry_point_id}", axum::routing::patch(patch_entry_point))
        .route("/internal/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Liveness, readiness-free health and metrics, for processes that serve no API (the gateway).
pub fn health_router() -> Router {
    crate::metrics::handle();
    Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics))
}

/// Serve on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serve any router (the API, the gateway, or both merged) until `shutdown` resolves.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "HTTP listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

// ---------- errors ----------

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    /// A body over the configured limit (the API's and the gateway's).
    pub(crate) fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is over the size limit")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut response =
            (self.status, Json(json!({ "error": { "code": self.code, "message": self.message } }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::amqp::worker::is_transient_db(&e) {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("database unavailable: {e}"));
        }
        // A value the database refuses (data exception, constraint, program limit) is the request's.
        let refused = |code: &str| ["22", "23", "54"].iter().any(|class| code.starts_with(class));
        match &e {
            sqlx::Error::Database(db) if db.code().is_some_and(|c| refused(&c)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "database_rejected", db.message().to_owned())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::ConversationNotFound => ApiError::not_found("conversation"),
            UpdateError::MessageNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "message_not_found", e.to_string()),
            UpdateError::KeyConflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            UpdateError::KeyReused { .. } => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_key_reused", e.to_string())
            }
            UpdateError::Invalid(m) => ApiError::bad_request(m),
            UpdateError::TooLong { .. } => ApiError::bad_request(e.to_string()),
            UpdateError::Database(e) => e.into(),
        }
    }
}

/// Read a JSON body, turning every failure into a 4xx that names the field.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    from_json(parse_json(body)?)
}

/// The body as JSON (refusing what PostgreSQL cannot store), before it is read as a type.
fn parse_json(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: not valid JSON: {e}")))?;
    if let Some(path) = nul_path(&bytes, &json) {
        return Err(ApiError::bad_request(format!("{path}: contains U+0000, which cannot be stored")));
    }
    Ok(json)
}

/// Read JSON as `T`; a 400 names the field that does not fit.
fn from_json<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("body: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// Where the first string or key holding U+0000 is (PostgreSQL's text and jsonb cannot hold
/// it), as a path like `message.metadata.note[1]`. In JSON text a NUL can only be the escape
/// `\u0000`, so bodies without one are not walked at all.
fn nul_path(raw: &[u8], value: &serde_json::Value) -> Option<String> {
    if !raw.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return None;
    }
    // Depth-first with one shared path (serde_json limits nesting to 128 levels).
    fn walk(value: &serde_json::Value, path: &mut Vec<String>) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
                path.push(format!("[{i}]"));
                let found = walk(v, path);
                if !found {
                    path.pop();
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
                path.push(format!(".{}", k.replace('\0', "\\u0000")));
                let found = k.contains('\0') || walk(v, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    walk(value, &mut path).then(|| {
        let joined = path.concat();
        match joined.strip_prefix('.') {
            Some(rest) => rest.to_owned(),
            None if joined.is_empty() => "body".to_owned(),
            None => joined,
        }
    })
}

/// Stack Auth's clients send `projectId`; it must be the token's project. Another project's
/// id answers 404, as another project's conversation does.
pub(crate) fn check_project_id(sent: Option<&str>, project: &str) -> Result<(), ApiError> {
    match sent {
        Some(sent) if sent != project => Err(ApiError::not_found("project")),
        _ => Ok(()),
    }
}

// ---------- auth ----------

/// The project the bearer token belongs to.
pub struct Project(pub String);

impl FromRequestParts<AppState> for Project {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token> header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Authorization header must be `Bearer <token>`"))?;
        let project =
            store::project_for_token(&state.pool, token).await?.ok_or_else(|| unauthorized("unknown token"))?;
        tracing::Span::current().record("project", project.as_str());
        Ok(Project(project))
    }
}

// ---------- request shapes ----------

fn parse_conversation_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request(format!("conversationId: `{raw}` is not a UUID")))
}

// ---------- handlers ----------

/// The conversation with a page of its messages (the newest `limit` unless `before` says).
async fn bundle(pool: &PgPool, project: &str, id: Uuid, page: &MessagePage) -> Result<Response, ApiError> {
    let bundle =
        read::conversation_page(pool, project, id, page).await?.ok_or_else(|| ApiError::not_found("conversation"))?;
    Ok(Json(bundle).into_response())
}

/// `?before=<nextCursor>&limit=N` of the conversation routes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MessagePageQuery {
    before: Option<String>,
    limit: Option<String>,
}

/// Parse a query string into `T`, answering 400 naming the parameter.
pub(crate) fn parse_query<T: DeserializeOwned + Default>(raw: Option<&str>) -> Result<T, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(T::default()) };
    serde_urlencoded::from_str(raw).map_err(|e| ApiError::bad_request(format!("query: {e}")))
}

/// A page size in `1..=max`, `default` when absent.
pub(crate) fn parse_limit(raw: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit: `{raw}` is not a whole number from 1 to {max}"))),
    }
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

#[tracing::instrument(skip_all, fields(project, conversation_id = %raw_id))]
async fn get_conversation(
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
async fn patch_conversation(
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

/// Queue the send of a stored, pending agent email. The broker away: 503; the message stays
/// pending and repeating the request queues it again.
async fn enqueue_send(
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
async fn resend_message(
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

/// intake's `{entryPointId, subject}` or Stack Auth's `{projectId, userId, subject,
/// initialMessage, priority, source}`, or any mix.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateConversationBody {
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

async fn create_conversation(
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateEntryPointBody {
    channel_type: String,
    adapter_key: String,
    external_channel_id: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    /// Secrets the webhook gateway verifies this entry point's requests with.
    #[serde(default)]
    webhook_secrets: Vec<String>,
    /// Token Meta's webhook subscription check must present.
    verify_token: Option<String>,
}

fn check_webhook_secrets(adapter_key: &str, secrets: &[String]) -> Result<(), ApiError> {
    let scheme = crate::gateway::SignatureScheme::for_adapter(adapter_key);
    for (i, secret) in secrets.iter().enumerate() {
        scheme.check_secret(secret).map_err(|e| ApiError::bad_request(format!("webhookSecrets[{i}]: {e}")))?;
    }
    Ok(())
}

async fn create_entry_point(
    State(state): State<AppState>,
    Project(project): Project,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: CreateEntryPointBody = parse_body(body)?;
    let channel_type: ChannelType =
        body.channel_type.parse().map_err(|e: String| ApiError::bad_request(format!("channelType: {e}")))?;
    if body.adapter_key.trim().is_empty() || body.adapter_key.contains('.') {
        return Err(ApiError::bad_request("adapterKey: must be a non-empty word without dots"));
    }
    if body.external_channel_id.trim().is_empty() {
        return Err(ApiError::bad_request("externalChannelId: must not be empty"));
    }
    check_webhook_secrets(body.adapter_key.trim(), &body.webhook_secrets)?;
    match store::create_entry_point_with_secrets(
        &state.pool,
        &project,
        channel_type,
        body.adapter_key.trim(),
        &body.external_channel_id,
        serde_json::Value::Object(body.metadata),
        &body.webhook_secrets,
        body.verify_token.as_deref(),
    )
    .await
    {
        Ok(ep) => Ok((StatusCode::CREATED, Json(ep)).into_response()),
        Err(e @ EntryPointError::Exists { .. }) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())),
        Err(EntryPointError::Database(e)) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchEntryPointBody {
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Replaces the list: send old and new secret while rotating, then only the new one.
    webhook_secrets: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    verify_token: Option<Option<String>>,
}

async fn patch_entry_point(
    State(state): State<AppState>,
    Project(project): Project,
    Path(raw_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::bad_request(format!("entryPointId: `{raw_id}` is not a UUID")))?;
    let body: PatchEntryPointBody = parse_body(body)?;
    if let Some(secrets) = &body.webhook_secrets {
        let adapter_key = store::entry_point_adapter_key(&state.pool, &project, id)
            .await?
            .ok_or_else(|| ApiError::not_found("entry point"))?;
        check_webhook_secrets(&adapter_key, secrets)?;
    }
    let changes = store::EntryPointChanges {
        metadata: body.metadata.map(serde_json::Value::Object),
        webhook_secrets: body.webhook_secrets,
        verify_token: body.verify_token,
    };
    let ep = store::update_entry_point(&state.pool, &project, id, &changes)
        .await?
        .ok_or_else(|| ApiError::not_found("entry point"))?;
    Ok(Json(ep).into_response())
}

async fn list_entry_points(State(state): State<AppState>, Project(project): Project) -> Result<Response, ApiError> {
    let entry_points = store::list_entry_points(&state.pool, &project).await?;
    Ok(Json(json!({ "entryPoints": entry_points })).into_response())
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
    Ok("ready")
}

async fn metrics() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render()).into_response()
}
