//! The entry point routes: register, list and change the channels conversations come in
//! through, with the webhook secrets the gateway checks.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use intake_adapters::ChannelType;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::Project;
use super::error::ApiError;
use super::patch_body::double_option;
use super::request::parse_body;
use super::AppState;
use crate::store::{self, EntryPointError};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateEntryPointBody {
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

pub(super) async fn create_entry_point(
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
pub(super) struct PatchEntryPointBody {
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Replaces the list: send old and new secret while rotating, then only the new one.
    webhook_secrets: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    verify_token: Option<Option<String>>,
}

pub(super) async fn patch_entry_point(
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

pub(super) async fn list_entry_points(
    State(state): State<AppState>,
    Project(project): Project,
) -> Result<Response, ApiError> {
    let entry_points = store::list_entry_points(&state.pool, &project).await?;
    Ok(Json(json!({ "entryPoints": entry_points })).into_response())
}
