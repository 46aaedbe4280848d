//! Reading requests: JSON bodies, query strings and path ids, each failure a 400 that names
//! the field.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// Read a JSON body, turning every failure into a 4xx that names the field.
pub(super) fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    from_json(parse_json(body)?)
}

/// The body as JSON (refusing what PostgreSQL cannot store), before it is read as a type.
pub(super) fn parse_json(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
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
pub(super) fn from_json<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, ApiError> {
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

pub(super) fn parse_conversation_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request(format!("conversationId: `{raw}` is not a UUID")))
}
