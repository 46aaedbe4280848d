//! `GET /internal/conversations`: the conversation list, with Stack Auth's query parameters
//! and intake's filters and keyset cursor.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::Project;
use super::error::ApiError;
use super::request::{check_project_id, parse_limit, parse_query};
use super::AppState;
use crate::read::{self, ConversationFilter};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ListQuery {
    project_id: Option<String>,
    query: Option<String>,
    status: Option<String>,
    user_id: Option<String>,
    assigned_to_user_id: Option<String>,
    tag: Option<String>,
    entry_point_id: Option<String>,
    updated_since: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    cursor: Option<String>,
}

pub(super) async fn list_conversations(
    State(state): State<AppState>,
    Project(project): Project,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q: ListQuery = parse_query(raw.as_deref())?;
    check_project_id(q.project_id.as_deref(), &project)?;
    if let Some(status) = &q.status {
        if !["open", "pending", "closed"].contains(&status.as_str()) {
            return Err(ApiError::bad_request(format!("status: `{status}` is not open, pending or closed")));
        }
    }
    let entry_point_id = match &q.entry_point_id {
        None => None,
        Some(raw) => Some(
            Uuid::parse_str(raw.trim())
                .map_err(|_| ApiError::bad_request(format!("entryPointId: `{raw}` is not a UUID")))?,
        ),
    };
    let updated_since = match &q.updated_since {
        None => None,
        Some(raw) => Some(
            raw.trim()
                .parse::<DateTime<Utc>>()
                .map_err(|_| ApiError::bad_request(format!("updatedSince: `{raw}` is not an RFC 3339 time")))?,
        ),
    };
    let limit = parse_limit(q.limit.as_deref(), read::DEFAULT_CONVERSATIONS, read::MAX_CONVERSATIONS)?;
    let offset = match &q.offset {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("offset: `{raw}` is not a whole number")))?,
    };
    let after = match &q.cursor {
        None => None,
        Some(raw) => Some(
            read::Cursor::decode(raw)
                .filter(|c| Uuid::parse_str(&c.tie).is_ok())
                .ok_or_else(|| ApiError::bad_request("cursor: not a nextCursor this API returned"))?,
        ),
    };
    let filter = ConversationFilter {
        status: q.status,
        user_id: q.user_id,
        assigned_to_user_id: q.assigned_to_user_id,
        tag: q.tag,
        entry_point_id,
        updated_since,
        query: q.query,
    };
    let list = read::list_conversations(&state.pool, &project, &filter, after.as_ref(), offset, limit).await?;
    Ok(Json(list).into_response())
}
