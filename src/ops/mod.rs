//! The ops console: server-rendered HTML pages under `/ops` for the people who run intake —
//! ingestion health, dead letters (inspect, replay, purge) and conversations.
//!
//! Off unless `INTAKE_OPS_TOKENS` is set. Pages are maud templates (escaped by default), need
//! no JavaScript, and every state change is a POST carrying the session's CSRF token.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use maud::Markup;

use crate::amqp::topology::Topology;
use crate::amqp::AmqpArgs;

mod auth;
mod conversations;
mod dead_letters;
mod layout;
mod overview;
mod payload;
mod replay_jobs;

pub use auth::parse_ops_tokens;

/// Settings of the ops console (`intake serve`, `intake worker --with-api`).
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Enables the ops console at `/ops`: `name:token` pairs separated by commas (tokens at
    /// least 16 characters). The name is logged as who signed in, replayed or purged.
    #[arg(long, env = "INTAKE_OPS_TOKENS", hide_env_values = true, value_delimiter = ',')]
    pub ops_tokens: Vec<String>,

    /// How long an ops console sign-in lasts.
    #[arg(long, env = "INTAKE_OPS_SESSION_TTL", default_value = "8h", value_parser = crate::amqp::parse_duration)]
    pub ops_session_ttl: Duration,

    /// Mark the ops session cookie `Secure` (behind a TLS proxy that does not send
    /// `X-Forwarded-Proto: https`; with that header it is marked anyway).
    #[arg(long, env = "INTAKE_OPS_SECURE_COOKIE")]
    pub ops_secure_cookie: bool,
}

/// A checked configuration: `None` from [`OpsConfig::from_args`] means the console is off.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// (operator name, token)
    pub operators: Vec<(String, String)>,
    pub session_ttl: Duration,
    pub secure_cookie: bool,
}

impl OpsConfig {
    pub fn from_args(args: &OpsArgs) -> anyhow::Result<Option<OpsConfig>> {
        let operators = parse_ops_tokens(&args.ops_tokens)?;
        if operators.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(!args.ops_session_ttl.is_zero(), "INTAKE_OPS_SESSION_TTL must be longer than 0s");
        Ok(Some(OpsConfig { operators, session_ttl: args.ops_session_ttl, secure_cookie: args.ops_secure_cookie }))
    }
}

/// Shared by every handler of the console.
#[derive(Clone)]
pub struct OpsState(Arc<Inner>);

struct Inner {
    pool: sqlx::PgPool,
    amqp_url: String,
    topology: Topology,
    auth: auth::Auth,
    jobs: replay_jobs::Jobs,
    sampler: crate::health::Sampler,
}

impl OpsState {
    pub fn new(pool: sqlx::PgPool, amqp: &AmqpArgs, config: OpsConfig) -> Self {
        let topology = Topology::from(amqp);
        OpsState(Arc::new(Inner {
            sampler: crate::health::Sampler::new(pool.clone(), amqp.amqp_url.clone(), topology.clone()),
            pool,
            amqp_url: amqp.amqp_url.clone(),
            topology,
            auth: auth::Auth::new(&config),
            jobs: replay_jobs::Jobs::default(),
        }))
    }
}

/// Form bodies are small; a selection of a few thousand ids fits easily.
const FORM_LIMIT: usize = 1024 * 1024;

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/ops", get(overview::page))
        .route("/ops/", get(overview::page))
        .route("/ops/style.css", get(layout::stylesheet))
        .route("/ops/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/ops/sign-out", post(auth::sign_out))
        .route("/ops/dead-letters", get(dead_letters::list))
        .route("/ops/dead-letters/confirm", post(dead_letters::confirm))
        .route("/ops/dead-letters/run", post(dead_letters::run))
        .route("/ops/dead-letters/{id}", get(dead_letters::detail))
        .route("/ops/jobs/{id}", get(replay_jobs::progress))
        .route("/ops/conversations", get(conversations::list))
        .route("/ops/conversations/{project}/{id}", get(conversations::detail))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// No page needs a script, a frame or another origin: a policy that forbids them turns any
/// escaping mistake into a harmless one. Pages show live state, so nothing is cached.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// A rendered page with a status.
pub(crate) fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A failure shown as a page.
#[derive(Debug)]
pub(crate) struct OpsError {
    status: StatusCode,
    message: String,
}

impl OpsError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        OpsError { status, message: message.into() }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// The broker or the database is away.
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"))
    }
}

impl IntoResponse for OpsError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "ops console request failed");
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        html(self.status, layout::error_page(title, &self.message))
    }
}

impl From<sqlx::Error> for OpsError {
    fn from(e: sqlx::Error) -> Self {
        OpsError::unavailable(format!("database: {e}"))
    }
}

/// The fields of a query string or form body, in order; a name may repeat (checkboxes).
#[derive(Debug, Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn parse(raw: &[u8]) -> Result<Fields, OpsError> {
        serde_urlencoded::from_bytes(raw).map(Fields).map_err(|e| OpsError::bad_request(format!("form: {e}")))
    }

    pub(crate) fn query(raw: Option<&str>) -> Result<Fields, OpsError> {
        Fields::parse(raw.unwrap_or_default().as_bytes())
    }

    pub(crate) fn form(body: &Bytes) -> Result<Fields, OpsError> {
        Fields::parse(body)
    }

    /// The first value, trimmed; empty counts as absent (an untouched form field).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty()).collect()
    }
}

/// `a=1&b=x%20y` from pairs, for links.
pub(crate) fn query_string(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `1234` → `1,234`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in seconds as `45s`, `12m`, `3h 5m`, `2d 4h`.
pub(crate) fn human_secs(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_secs(5.2), "5s");
        assert_eq!(human_secs(125.0), "2m 5s");
        assert_eq!(human_secs(7300.0), "2h 1m");
    }

    #[test]
    fn fields_keep_repeats_and_drop_empties() {
        let f = Fields::parse(b"id=a&id=b&reason=&text=+x+").unwrap();
        assert_eq!(f.all("id"), ["a", "b"]);
        assert_eq!(f.get("reason"), None);
        assert_eq!(f.get("text"), Some("x"));
    }
}
