//! The webhook gateway: `POST /hooks/{adapterKey}/{externalChannelId}` takes a provider's
//! webhook over HTTP, verifies its signature before anything else, and publishes the raw body to
//! RabbitMQ (publisher confirms). It answers 2xx only once the broker confirmed, so a provider
//! whose request failed retries it, and the worker's idempotency keys absorb the duplicates.
//!
//! The path names the entry point whose secrets verify the request; the published message
//! carries that entry point's project, so a request signed with one tenant's secret can only
//! reach that tenant's entry points. Transport only: decoding happens in the worker.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use intake_adapters::signature::{self, SignatureError};
use intake_adapters::{AdapterRegistry, ChannelType};
use serde_json::json;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::amqp::envelope;
use crate::amqp::publish::{new_message_properties, LazyPublisher};
use crate::http::ApiError;
use crate::store::{self, GatewayEntryPoint};

/// How a provider signs its webhooks; chosen by the adapter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`; secrets `whsec_<base64>`.
    StandardWebhooks,
    /// `X-Slack-Request-Timestamp`, `X-Slack-Signature`; the app's signing secret.
    Slack,
    /// `X-Twilio-Signature` over the public URL and the form fields; the auth token.
    Twilio,
    /// `X-Hub-Signature-256` (WhatsApp Cloud API); the Meta app secret.
    Meta,
    /// `X-Telegram-Bot-Api-Secret-Token`; the `secret_token` given to `setWebhook`.
    TelegramSecretToken,
}

impl SignatureScheme {
    pub fn for_adapter(adapter_key: &str) -> Self {
        match adapter_key {
            "slack" => SignatureScheme::Slack,
            "twilio-sms" => SignatureScheme::Twilio,
            "whatsapp" => SignatureScheme::Meta,
            "telegram" => SignatureScheme::TelegramSecretToken,
            _ => SignatureScheme::StandardWebhooks,
        }
    }

    /// Check a secret's shape when it is registered, so a typo fails then and not at the first
    /// webhook.
    pub fn check_secret(self, secret: &str) -> Result<(), String> {
        if secret.trim().is_empty() {
            return Err("must not be empty".into());
        }
        match self {
            SignatureScheme::StandardWebhooks => signature::sign_standard_webhooks(secret, "check", 0, b"")
                .map(|_| ())
                .map_err(|_| "a Standard Webhooks secret looks like `whsec_<base64>`".into()),
            SignatureScheme::TelegramSecretToken
                if secret.len() > 256
                    || !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Err("a Telegram secret token is 1-256 characters of A-Z, a-z, 0-9, `_` and `-`".into())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct GatewayState {
    pub pool: PgPool,
    pub publisher: Arc<LazyPublisher>,
    pub exchange: String,
    pub registry: AdapterRegistry,
    /// The public base URL providers call (e.g. `https://hooks.example.com`); Twilio signs the
    /// full URL it called. Unset: taken from the `Host` and `X-Forwarded-Proto` headers.
    pub public_url: Option<String>,
    /// Allowed clock difference for timestamped signatures, in seconds.
    pub tolerance_secs: i64,
    pub body_limit: usize,
}

pub fn router(state: GatewayState) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .route("/hooks/{adapter_key}/{external_channel_id}", post(receive).get(meta_verification))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), refuse_declared_too_large))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A body whose declared length is over the limit is refused before any of it is read, so the
/// client gets its 413 at once (a client that sent `Expect: 100-continue` never uploads it)
/// instead of a connection cut in the middle of the upload. Bodies without a length are still
/// cut off at the limit by `DefaultBodyLimit`.
async fn refuse_declared_too_large(
    State(state): State<GatewayState>,
    Path((adapter_key, _)): Path<(String, String)>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.body_limit as u64) {
        count(&adapter_label(&state.registry, &adapter_key), "too_large");
        return ApiError::payload_too_large().into_response();
    }
    next.run(request).await
}

/// The adapter key as a metrics label: any path segment that is not a registered adapter counts
/// as `unknown`, so requests to made-up paths cannot add label values (series) without bound.
fn adapter_label(registry: &AdapterRegistry, adapter_key: &str) -> String {
    match channel_type_of(registry, adapter_key) {
        Some(_) => adapter_key.to_owned(),
        None => "unknown".to_owned(),
    }
}

/// Longest AMQP `shortstr` (`content_type`, `message_id`): a longer value cannot be published.
const MAX_SHORT_STRING: usize = 255;

/// The request as the signature schemes see it.
struct SignedRequest<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
    url: String,
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn verify(
        &self,
        scheme: SignatureScheme,
        secrets: &[&str],
        now: i64,
        tolerance: i64,
    ) -> Result<(), SignatureError> {
        match scheme {
            SignatureScheme::StandardWebhooks => signature::verify_standard_webhooks(
                secrets,
                self.header(signature::STANDARD_WEBHOOKS_ID_HEADER),
                self.header(signature::STANDARD_WEBHOOKS_TIMESTAMP_HEADER),
                self.body,
                self.header(signature::STANDARD_WEBHOOKS_SIGNATURE_HEADER),
                now,
                tolerance,
            ),
            SignatureScheme::Slack => signature::verify_slack_any(
                secrets,
                self.header(signature::SLACK_TIMESTAMP_HEADER),
                self.body,
                self.header(signature::SLACK_SIGNATURE_HEADER),
                now,
                tolerance,
            ),
            SignatureScheme::Twilio => {
                let params: Vec<(String, String)> = serde_urlencoded::from_bytes(self.body)
                    .map_err(|e| SignatureError::Malformed(format!("Twilio body is not a form: {e}")))?;
                signature::verify_twilio_any(
                    secrets,
                    &self.url,
                    &params,
                    self.header(signature::TWILIO_SIGNATURE_HEADER),
                )
            }
            SignatureScheme::Meta => {
                signature::verify_meta_any(secrets, self.body, self.header(signature::META_SIGNATURE_HEADER))
            }
            SignatureScheme::TelegramSecretToken => signature::verify_telegram_secret_token_any(
                secrets,
                self.header(signature::TELEGRAM_SECRET_TOKEN_HEADER),
            ),
        }
    }
}

fn channel_type_of(registry: &AdapterRegistry, adapter_key: &str) -> Option<ChannelType> {
    registry.keys().into_iter().find(|(_, key)| key == adapter_key).map(|(channel_type, _)| channel_type)
}

fn count(adapter: &str, outcome: &'static str) {
    metrics::counter!("intake_gateway_requests_total", "adapter" => adapter.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The entry point at the path and the channel type of its adapter; 404 when either is unknown.
async fn entry_points_at(
    state: &GatewayState,
    adapter_key: &str,
    external_channel_id: &str,
) -> Result<(ChannelType, Vec<GatewayEntryPoint>), ApiError> {
    let channel_type = channel_type_of(&state.registry, adapter_key).ok_or_else(|| {
        count("unknown", "unknown_adapter");
        ApiError::new(StatusCode::NOT_FOUND, "unknown_adapter", format!("no adapter `{adapter_key}`"))
    })?;
    let entry_points: Vec<GatewayEntryPoint> =
        store::gateway_entry_points(&state.pool, channel_type, external_channel_id)
            .await?
            .into_iter()
            .filter(|ep| ep.adapter_key == adapter_key)
            .collect();
    if entry_points.is_empty() {
        count(adapter_key, "unknown_entry_point");
        tracing::warn!(adapter = adapter_key, external_channel_id, "webhook for an unknown entry point refused");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_entry_point",
            format!("no {adapter_key} entry point `{external_channel_id}`"),
        ));
    }
    Ok((channel_type, entry_points))
}

#[tracing::instrument(skip_all, fields(adapter = %adapter_key, external_channel_id = %external_channel_id, project))]
async fn receive(
    State(state): State<GatewayState>,
    Path((adapter_key, external_channel_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            count(&adapter_label(&state.registry, &adapter_key), "too_large");
            ApiError::payload_too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", rejection.body_text())
        }
    })?;
    let (channel_type, entry_points) = entry_points_at(&state, &adapter_key, &external_channel_id).await?;

    // Signature first: nothing about the body is looked at before it verifies.
    let scheme = SignatureScheme::for_adapter(&adapter_key);
    let request =
        SignedRequest { headers: &headers, body: &body, url: public_url(state.public_url.as_deref(), &headers, &uri) };
    let now = chrono::Utc::now().timestamp();
    let mut last_error = SignatureError::Mismatch;
    let mut verified = None;
    for ep in &entry_points {
        if ep.webhook_secrets.is_empty() {
            last_error = SignatureError::InvalidSecret("the entry point has no webhook secret configured".into());
            continue;
        }
        let secrets: Vec<&str> = ep.webhook_secrets.iter().map(String::as_str).collect();
        match request.verify(scheme, &secrets, now, state.tolerance_secs) {
            Ok(()) => {
                verified = Some(ep);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let Some(entry_point) = verified else {
        count(&adapter_key, last_error.reason_code());
        tracing::warn!(reason = last_error.reason_code(), error = %last_error, "webhook signature refused; nothing published");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", last_error.to_string()));
    };
    tracing::Span::current().record("project", entry_point.project_id.as_str());

    if let Some(challenge) = slack_challenge(&adapter_key, &body) {
        count(&adapter_key, "challenge");
        return Ok(Json(json!({ "challenge": challenge })).into_response());
    }

    let routing_key = format!("{channel_type}.{adapter_key}");
    // The request's own content type when it can be an AMQP shortstr (a longer one would make
    // building the message panic), else the channel's usual one.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_SHORT_STRING)
        .map(str::to_owned)
        .unwrap_or_else(|| envelope::default_content_type(channel_type, &adapter_key).to_owned());
    let message_id = headers
        .get(signature::STANDARD_WEBHOOKS_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut amqp_headers = forwarded_headers(&headers);
    amqp_headers.push((envelope::EXTERNAL_CHANNEL_ID, entry_point.external_channel_id.clone()));
    amqp_headers.push((envelope::PROJECT, entry_point.project_id.clone()));
    amqp_headers.push((envelope::ADAPTER, adapter_key.clone()));
    let properties = new_message_properties(&message_id, &content_type, amqp_headers);
    if let Err(e) = state.publisher.publish(&state.exchange, &routing_key, &body, properties).await {
        count(&adapter_key, "publish_failed");
        // The cause names internal broker nodes: it goes to the log, not to the sender.
        tracing::error!(error = %format!("{e:#}"), %message_id, "webhook not queued");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the message could not be queued; retry later".to_owned(),
        ));
    }
    count(&adapter_key, "accepted");
    tracing::info!(%message_id, %routing_key, bytes = body.len(), "webhook accepted and queued");
    if scheme == SignatureScheme::Twilio {
        // Twilio reads the answer as TwiML; an empty <Response/> means "no reply message".
        let twiml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";
        return Ok(([(header::CONTENT_TYPE, "text/xml")], twiml).into_response());
    }
    Ok(Json(json!({ "status": "accepted", "messageId": message_id })).into_response())
}

/// Slack checks a new Request URL with a signed `url_verification` event.
fn slack_challenge(adapter_key: &str, body: &[u8]) -> Option<String> {
    if adapter_key != "slack" {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    (value.get("type")?.as_str()? == "url_verification").then(|| value.get("challenge")?.as_str().map(str::to_owned))?
}

/// Request headers worth keeping for the adapters (provider ids, retry counters). intake's own
/// `x-intake-*` headers are never taken from a request: only the gateway sets them.
fn forwarded_headers(headers: &HeaderMap) -> Vec<(&'static str, String)> {
    const KEEP: &[&str] = &[
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-slack-retry-reason",
        "x-twilio-idempotency-token",
        "x-github-delivery",
    ];
    KEEP.iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((*name, value.chars().take(512).collect()))
        })
        .collect()
}

/// The URL the provider called, as it signed it: the configured public base URL, else rebuilt
/// from `Host` and `X-Forwarded-Proto`.
pub(crate) fn public_url(base_url: Option<&str>, headers: &HeaderMap, uri: &Uri) -> String {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match base_url {
        Some(base) => format!("{}{path_and_query}", base.trim_end_matches('/')),
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
            let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
            format!("{scheme}://{host}{path_and_query}")
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct MetaVerification {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta (WhatsApp) checks a webhook URL with `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`
/// and expects the challenge back when the token is the one configured.
async fn meta_verification(
    State(state): State<GatewayState>,
    Path((adapter_key, external_channel_id)): Path<(String, String)>,
    Query(query): Query<MetaVerification>,
) -> Result<Response, ApiError> {
    let (_, entry_points) = entry_points_at(&state, &adapter_key, &external_channel_id).await?;
    let (Some("subscribe"), Some(token), Some(challenge)) =
        (query.mode.as_deref(), query.verify_token.as_deref(), query.challenge)
    else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected hub.mode=subscribe, hub.verify_token and hub.challenge",
        ));
    };
    let matches = entry_points.iter().fold(subtle::Choice::from(0), |acc, ep| {
        let expected = ep.verify_token.as_deref().unwrap_or_default();
        acc | (subtle::Choice::from(u8::from(!expected.is_empty())) & expected.as_bytes().ct_eq(token.as_bytes()))
    });
    if !bool::from(matches) {
        count(&adapter_key, "verify_token_mismatch");
        tracing::warn!(adapter = %adapter_key, %external_channel_id, "Meta verification with a wrong verify token");
        return Err(ApiError::new(StatusCode::FORBIDDEN, "invalid_verify_token", "verify token does not match"));
    }
    count(&adapter_key, "challenge");
    Ok(([(header::CONTENT_TYPE, "text/plain")], challenge).into_response())
}
