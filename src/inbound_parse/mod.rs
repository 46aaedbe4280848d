//! Inbound-parse webhooks: `POST /hooks/inbound-mail/{mailgun|sendgrid|postmark|mandrill}`.
//! Each request is authenticated with its provider's scheme before anything else; the raw
//! message (Postmark's rebuilt from its JSON when the raw one is not included) is published to
//! `email.<adapterKey>` of the mailbox it was sent to, with that mailbox as the external channel
//! id, and the provider hears 2xx only once RabbitMQ confirmed every copy (503 otherwise, and
//! it retries). A mail for an address that is no email entry point is refused before
//! anything is published: 406 for Mailgun and 403 for Postmark (the answers after which they
//! stop retrying), 404 for the others.

mod form;
pub mod mailgun;
pub mod mandrill;
pub mod postmark;
mod rebuild;
pub mod sendgrid;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use clap::Args;
use serde_json::json;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::amqp::envelope;
use crate::amqp::publish::{new_message_properties, LazyPublisher};
use crate::http::ApiError;
use crate::smtpd::delivery::{ENVELOPE_FROM, ENVELOPE_TO};
use crate::smtpd::recipients::{self, LookupError, Mailbox};
use form::Form;

/// Provider credentials; a provider without them has no route.
#[derive(Debug, Clone, Default, Args)]
pub struct InboundMailArgs {
    /// Mailgun's HTTP webhook signing key (Mailgun: Sending → Webhooks).
    #[arg(long, env = "INTAKE_MAILGUN_SIGNING_KEY", hide_env_values = true)]
    pub mailgun_signing_key: Option<String>,

    /// `user:password` that SendGrid's Inbound Parse URL carries as basic auth.
    #[arg(long, env = "INTAKE_SENDGRID_INBOUND_AUTH", hide_env_values = true)]
    pub sendgrid_inbound_auth: Option<String>,

    /// `user:password` that Postmark's inbound webhook URL carries as basic auth.
    #[arg(long, env = "INTAKE_POSTMARK_INBOUND_AUTH", hide_env_values = true)]
    pub postmark_inbound_auth: Option<String>,

    /// Mandrill webhook keys (comma-separated: one per inbound webhook, or old and new while
    /// rotating).
    #[arg(long, env = "INTAKE_MANDRILL_WEBHOOK_KEYS", hide_env_values = true, value_delimiter = ',')]
    pub mandrill_webhook_keys: Vec<String>,

    /// Largest inbound-mail webhook body, in bytes (a mail and its encoding overhead).
    #[arg(long, env = "INTAKE_INBOUND_MAIL_BODY_LIMIT", default_value_t = 40 * 1024 * 1024)]
    pub inbound_mail_body_limit: usize,
}

#[derive(Clone)]
pub struct InboundMailState {
    pub pool: PgPool,
    pub publisher: Arc<LazyPublisher>,
    pub exchange: String,
    pub credentials: InboundMailArgs,
    /// The public base URL (Mandrill signs the URL it called); unset: from `Host`.
    pub public_url: Option<String>,
    /// Allowed clock difference for Mailgun's signed timestamp, in seconds.
    pub tolerance_secs: i64,
}

/// One message a provider handed over.
#[derive(Debug)]
pub struct InboundMail {
    /// The envelope recipients (or the route's matched address).
    pub recipients: Vec<String>,
    pub mail_from: Option<String>,
    pub provider_id: Option<String>,
    pub raw: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no inbound-mail route `{0}` (unknown provider, or its credentials are not configured)")]
    NotConfigured(String),
    #[error("no email entry point for {0}")]
    UnknownMailbox(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<InboundError> for ApiError {
    fn from(e: InboundError) -> Self {
        let (status, code) = match &e {
            InboundError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            InboundError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            InboundError::NotConfigured(_) => (StatusCode::NOT_FOUND, "unknown_provider"),
            InboundError::UnknownMailbox(_) => (StatusCode::NOT_FOUND, "unknown_entry_point"),
            InboundError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

pub fn router(state: InboundMailState) -> Router {
    let limit = state.credentials.inbound_mail_body_limit;
    Router::new()
        .route("/hooks/inbound-mail/{provider}", post(receive).head(exists).get(exists))
        // Mailgun posts the raw message only to a forward() URL ending in `mime`.
        .route("/hooks/inbound-mail/{provider}/mime", post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Mandrill checks a new webhook URL with a HEAD request.
async fn exists() -> StatusCode {
    StatusCode::OK
}

#[tracing::instrument(skip_all, fields(provider = %provider))]
async fn receive(
    State(state): State<InboundMailState>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let outcome = authenticate_and_extract(&state, &provider, &uri, &headers, body).await;
    let mails = match outcome {
        Ok(mails) => mails,
        Err(e) => {
            count(&provider, outcome_label(&e));
            tracing::warn!(error = %e, "inbound mail refused; nothing published");
            return Err(e.into());
        }
    };
    match publish_all(&state, &provider, &mails).await {
        Ok(published) => {
            count(&provider, "accepted");
            Ok(Json(json!({ "status": "accepted", "published": published })).into_response())
        }
        Err(e @ InboundError::UnknownMailbox(_)) => {
            count(&provider, outcome_label(&e));
            tracing::warn!(error = %e, "inbound mail for an unknown mailbox refused; nothing published");
            // A mail no entry point takes will not be taken later either: answer with the status
            // that makes the provider stop retrying where it has one.
            let status = match provider.as_str() {
                "mailgun" => StatusCode::NOT_ACCEPTABLE,
                "postmark" => StatusCode::FORBIDDEN,
                _ => StatusCode::NOT_FOUND,
            };
            Err(ApiError::new(status, "unknown_entry_point", e.to_string()))
        }
        Err(e) => {
            count(&provider, outcome_label(&e));
            tracing::warn!(error = %e, "inbound mail not published");
            Err(e.into())
        }
    }
}

fn outcome_label(e: &InboundError) -> &'static str {
    match e {
        InboundError::Unauthorized(_) => "unauthorized",
        InboundError::BadRequest(_) => "bad_request",
        InboundError::NotConfigured(_) => "unknown_provider",
        InboundError::UnknownMailbox(_) => "unknown_entry_point",
        InboundError::Unavailable(_) => "publish_failed",
    }
}

fn count(provider: &str, outcome: &'static str) {
    let provider = match provider {
        "mailgun" | "sendgrid" | "postmark" | "mandrill" => provider.to_owned(),
        _ => "unknown".to_owned(),
    };
    metrics::counter!("intake_inbound_mail_requests_total", "provider" => provider, "outcome" => outcome).increment(1);
}

/// Authentication first: nothing of the body is looked at before it passed (the form is parsed
/// first only where the signature covers its fields).
async fn authenticate_and_extract(
    state: &InboundMailState,
    provider: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Vec<InboundMail>, InboundError> {
    let credentials = &state.credentials;
    let not_configured = || InboundError::NotConfigured(provider.to_owned());
    match provider {
        "mailgun" => {
            let key =
                credentials.mailgun_signing_key.as_deref().filter(|k| !k.is_empty()).ok_or_else(not_configured)?;
            let form = Form::read(headers, body).await?;
            mailgun::verify(&form, key, chrono::Utc::now().timestamp(), state.tolerance_secs)?;
            Ok(vec![mailgun::mail(&form)?])
        }
        "sendgrid" => {
            let expected =
                credentials.sendgrid_inbound_auth.as_deref().filter(|k| !k.is_empty()).ok_or_else(not_configured)?;
            check_basic_auth(headers, expected)?;
            Ok(vec![sendgrid::mail(&Form::read(headers, body).await?)?])
        }
        "postmark" => {
            let expected =
                credentials.postmark_inbound_auth.as_deref().filter(|k| !k.is_empty()).ok_or_else(not_configured)?;
            check_basic_auth(headers, expected)?;
            Ok(vec![postmark::mail(&body)?])
        }
        "mandrill" => {
            if credentials.mandrill_webhook_keys.iter().all(|k| k.is_empty()) {
                return Err(not_configured());
            }
            let form = Form::read(headers, body).await?;
            let signature = headers.get(mandrill::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let url = crate::gateway::public_url(state.public_url.as_deref(), headers, uri);
            mandrill::verify(&form, &credentials.mandrill_webhook_keys, &url, signature)?;
            mandrill::mails(&form)
        }
        _ => Err(not_configured()),
    }
}

/// `Authorization: Basic …` equal to `user:password`, compared in constant time.
fn check_basic_auth(headers: &HeaderMap, expected: &str) -> Result<(), InboundError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .ok_or_else(|| InboundError::Unauthorized("basic auth credentials required".into()))?;
    if bool::from(given.ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(InboundError::Unauthorized("basic auth credentials do not match".into()))
    }
}

/// Every mail's mailboxes are looked up before anything is published, so a refused request
/// published nothing; then one copy per mailbox, each confirmed.
async fn publish_all(state: &InboundMailState, provider: &str, mails: &[InboundMail]) -> Result<usize, InboundError> {
    let mut plan: Vec<(&InboundMail, Vec<(String, Mailbox)>)> = Vec::new();
    for mail in mails {
        let mut targets: Vec<(String, Mailbox)> = Vec::new();
        for recipient in &mail.recipients {
            match recipients::find_mailbox(&state.pool, recipient).await {
                Ok(mailbox) if targets.iter().any(|(_, m)| m.entry_point_id == mailbox.entry_point_id) => {}
                Ok(mailbox) => targets.push((recipient.clone(), mailbox)),
                Err(LookupError::Unknown(_) | LookupError::Ambiguous(_)) => {}
                Err(LookupError::Database(e)) => return Err(InboundError::Unavailable(format!("database: {e}"))),
            }
        }
        if targets.is_empty() {
            return Err(InboundError::UnknownMailbox(format!("{:?}", mail.recipients)));
        }
        plan.push((mail, targets));
    }
    let mut published = 0;
    for (mail, targets) in plan {
        for (recipient, mailbox) in targets {
            let mut headers = vec![
                (envelope::EXTERNAL_CHANNEL_ID, mailbox.external_channel_id.clone()),
                (envelope::PROJECT, mailbox.project_id.clone()),
                (envelope::ADAPTER, mailbox.adapter_key.clone()),
                (ENVELOPE_TO, recipient),
                ("x-intake-inbound-provider", provider.to_owned()),
            ];
            if let Some(from) = &mail.mail_from {
                headers.push((ENVELOPE_FROM, from.chars().take(512).collect()));
            }
            let message_id = mail
                .provider_id
                .as_deref()
                .filter(|id| !id.is_empty() && id.len() <= 200)
                .map(|id| format!("{provider}.{id}.{}", mailbox.entry_point_id.simple()))
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let properties = new_message_properties(&message_id, "message/rfc822", headers);
            let routing_key = format!("email.{}", mailbox.adapter_key);
            state.publisher.publish(&state.exchange, &routing_key, &mail.raw, properties).await.map_err(|e| {
                // The cause names internal broker nodes: logged, not answered.
                tracing::error!(error = %format!("{e:#}"), %message_id, "inbound mail not queued");
                InboundError::Unavailable("the message could not be queued; retry later".to_owned())
            })?;
            published += 1;
        }
    }
    Ok(published)
}
