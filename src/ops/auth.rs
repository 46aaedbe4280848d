//! Who may use the console: sign-in with an ops token, in-memory sessions with expiry, and the
//! per-session CSRF token every POST carries.
//!
//! Tokens and CSRF tokens are compared in constant time. Sessions are kept in this process only:
//! a restart, or another instance behind a load balancer, asks to sign in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{layout, Fields, OpsConfig, OpsError, OpsState};

const COOKIE: &str = "intake_ops";
const MIN_TOKEN_CHARS: usize = 16;

/// Parse `INTAKE_OPS_TOKENS`: `name:token` pairs, tokens of at least 16 characters.
pub fn parse_ops_tokens(entries: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, entry) in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()).enumerate() {
        // The message never quotes the entry: it holds a secret.
        let (name, token) = entry
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("INTAKE_OPS_TOKENS entry {} is not `name:token`", n + 1))?;
        let (name, token) = (name.trim(), token.trim());
        anyhow::ensure!(!name.is_empty(), "INTAKE_OPS_TOKENS entry {}: the name before `:` is empty", n + 1);
        anyhow::ensure!(
            token.chars().count() >= MIN_TOKEN_CHARS,
            "INTAKE_OPS_TOKENS entry {} (`{name}`): the token must be at least {MIN_TOKEN_CHARS} characters",
            n + 1
        );
        anyhow::ensure!(
            !out.iter().any(|(_, t)| t == token),
            "INTAKE_OPS_TOKENS entry {} (`{name}`): the same token is given twice; each operator needs their own",
            n + 1
        );
        out.push((name.to_owned(), token.to_owned()));
    }
    Ok(out)
}

/// The operators' token hashes and the live sessions.
pub(super) struct Auth {
    /// (name, SHA-256 of the token): equal-length digests compare in constant time.
    operators: Vec<(String, [u8; 32])>,
    ttl: Duration,
    secure_cookie: bool,
    /// Keyed by the SHA-256 of the session cookie, so a lookup's timing says nothing about it.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

struct Session {
    operator: String,
    csrf: String,
    expires: Instant,
}

/// A signed-in operator (the extractor of every page but sign-in).
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub name: String,
    pub csrf: String,
}

impl Operator {
    /// Refuse a state-changing form without this session's CSRF token.
    pub(crate) fn check_csrf(&self, form: &Fields) -> Result<(), OpsError> {
        let sent = form.get("csrf").unwrap_or_default();
        if bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            tracing::warn!(operator = %self.name, "ops console: form without a valid CSRF token refused");
            Err(OpsError::new(
                StatusCode::FORBIDDEN,
                "This form is missing its CSRF token or it is wrong. Reload the page and try again.",
            ))
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Auth {
    pub(super) fn new(config: &OpsConfig) -> Self {
        Auth {
            operators: config.operators.iter().map(|(name, token)| (name.clone(), digest(token))).collect(),
            ttl: config.session_ttl,
            secure_cookie: config.secure_cookie,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The operator whose token this is; every configured token is compared, match or not.
    fn operator_for(&self, token: &str) -> Option<String> {
        let given = digest(token);
        let mut found = None;
        for (name, expected) in &self.operators {
            if bool::from(given[..].ct_eq(&expected[..])) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// A new session; returns the cookie value.
    fn open(&self, operator: String) -> String {
        let cookie = random_token();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(digest(&cookie), Session { operator, csrf: random_token(), expires: now + self.ttl });
        cookie
    }

    fn find(&self, cookie: &str) -> Option<Operator> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let key = digest(cookie);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(Operator { name: s.operator.clone(), csrf: s.csrf.clone() }),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    fn close(&self, cookie: &str) {
        self.sessions.lock().expect("sessions lock").remove(&digest(cookie));
    }

    /// `Secure` when configured or when a TLS-terminating proxy says the browser used HTTPS.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.secure_cookie
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }

    fn set_cookie(&self, headers: &HeaderMap, value: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure(headers) { "; Secure" } else { "" };
        let cookie =
            format!("{COOKIE}={value}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={}{secure}", max_age.as_secs());
        HeaderValue::from_str(&cookie).expect("cookie is ASCII")
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl FromRequestParts<OpsState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &OpsState) -> Result<Self, Self::Rejection> {
        match session_cookie(&parts.headers).and_then(|c| state.0.auth.find(c)) {
            Some(operator) => Ok(operator),
            // A page asks to sign in; a form post without a session is refused outright.
            None if parts.method == axum::http::Method::GET => Err(Redirect::to("/ops/sign-in").into_response()),
            None => {
                Err(OpsError::new(StatusCode::UNAUTHORIZED, "Not signed in (or the session expired).").into_response())
            }
        }
    }
}

pub(super) async fn sign_in_page() -> Response {
    super::html(StatusCode::OK, sign_in_markup(None))
}

fn sign_in_markup(error: Option<&str>) -> maud::Markup {
    layout::bare_page(
        "Sign in",
        html! {
            form.card.sign-in method="post" action="/ops/sign-in" {
                h1 { "intake ops" }
                p.muted { "Sign in with an ops token (" code { "INTAKE_OPS_TOKENS" } ")." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                label for="token" { "Ops token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub(super) async fn sign_in(State(state): State<OpsState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match Fields::form(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let auth = &state.0.auth;
    let Some(operator) = form.get("token").and_then(|t| auth.operator_for(t)) else {
        tracing::warn!("ops console: sign-in with a wrong token refused");
        return super::html(StatusCode::UNAUTHORIZED, sign_in_markup(Some("That token is not valid.")));
    };
    tracing::info!(operator = %operator, "ops console: signed in");
    let cookie = auth.open(operator);
    let mut response = Redirect::to("/ops").into_response();
    response.headers_mut().insert(header::SET_COOKIE, auth.set_cookie(&headers, &cookie, auth.ttl));
    response
}

pub(super) async fn sign_out(
    State(state): State<OpsState>,
    operator: Operator,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpsError> {
    operator.check_csrf(&Fields::form(&body)?)?;
    let auth = &state.0.auth;
    if let Some(cookie) = session_cookie(&headers) {
        auth.close(cookie);
    }
    tracing::info!(operator = %operator.name, "ops console: signed out");
    let mut response = Redirect::to("/ops/sign-in").into_response();
    response.headers_mut().insert(header::SET_COOKIE, auth.set_cookie(&headers, "", Duration::ZERO));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(ttl: Duration) -> Auth {
        Auth::new(&OpsConfig {
            operators: vec![("ada".into(), "0123456789abcdef".into()), ("bob".into(), "fedcba9876543210".into())],
            session_ttl: ttl,
            secure_cookie: false,
        })
    }

    #[test]
    fn tokens_parse_with_clear_errors() {
        let ok = parse_ops_tokens(&["ada:0123456789abcdef".into(), " ".into()]).unwrap();
        assert_eq!(ok, [("ada".to_owned(), "0123456789abcdef".to_owned())]);
        let short = parse_ops_tokens(&["ada:short-secret".into()]).unwrap_err().to_string();
        assert!(short.contains("at least 16") && !short.contains("short-secret"), "{short}");
        assert!(parse_ops_tokens(&["no-colon-here-at-all".into()]).unwrap_err().to_string().contains("name:token"));
        assert!(parse_ops_tokens(&[":0123456789abcdef".into()]).is_err());
        assert!(parse_ops_tokens(&["a:0123456789abcdef".into(), "b:0123456789abcdef".into()]).is_err());
    }

    #[test]
    fn sessions_find_their_operator_and_expire() {
        let a = auth(Duration::from_secs(60));
        assert_eq!(a.operator_for("fedcba9876543210").as_deref(), Some("bob"));
        assert_eq!(a.operator_for("fedcba987654321"), None);
        let cookie = a.open("ada".into());
        assert_eq!(a.find(&cookie).unwrap().name, "ada");
        assert!(a.find("forged").is_none());
        a.close(&cookie);
        assert!(a.find(&cookie).is_none());

        let expired = auth(Duration::from_nanos(1));
        let cookie = expired.open("ada".into());
        std::thread::sleep(Duration::from_millis(2));
        assert!(expired.find(&cookie).is_none());
    }

    #[test]
    fn csrf_must_match() {
        let op = Operator { name: "ada".into(), csrf: "abc".into() };
        assert!(op.check_csrf(&Fields::parse(b"csrf=abc").unwrap()).is_ok());
        assert!(op.check_csrf(&Fields::parse(b"csrf=abd").unwrap()).is_err());
        assert!(op.check_csrf(&Fields::parse(b"").unwrap()).is_err());
    }

    #[test]
    fn cookie_flags() {
        let a = auth(Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        let plain = a.set_cookie(&headers, "v", Duration::from_secs(60));
        assert_eq!(plain.to_str().unwrap(), "intake_ops=v; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=60");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(a.set_cookie(&headers, "v", Duration::from_secs(60)).to_str().unwrap().ends_with("; Secure"));
        let mut cookie_headers = HeaderMap::new();
        cookie_headers.insert(header::COOKIE, HeaderValue::from_static("a=1; intake_ops=xyz; b=2"));
        assert_eq!(session_cookie(&cookie_headers), Some("xyz"));
    }
}
