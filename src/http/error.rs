//! [`ApiError`]: every failure as a status and a `{"error": {"code", "message"}}` body, and
//! how database and update-logic errors map onto it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::update::UpdateError;

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
