//! Entry points: registration, the tenant rule for unscoped traffic, resolution, the gateway's view.

use chrono::{DateTime, Utc};
use intake_adapters::ChannelType;
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryPointView {
    pub id: Uuid,
    pub channel_type: String,
    pub adapter_key: String,
    pub is_entry_point: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub external_channel_id: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Entry-point routes only: whether traffic that names no project (an MTA, a publisher
    /// without `x-intake-project`) comes here. Only the first project to register an external
    /// id gets it; the others receive traffic scoped to them (the gateway, `x-intake-project`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receives_unscoped_traffic: Option<bool>,
}

/// Normalize an external channel id the way adapters produce it (mailboxes are
/// case-insensitive).
pub fn normalize_external_channel_id(channel_type: ChannelType, id: &str) -> String {
    match channel_type {
        ChannelType::Email => id.trim().trim_start_matches('<').trim_end_matches('>').to_lowercase(),
        _ => id.trim().to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EntryPointError {
    #[error("an entry point for {channel_type} `{external_channel_id}` already exists in this project")]
    Exists { channel_type: String, external_channel_id: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn create_entry_point(
    pool: &PgPool,
    project_id: &str,
    channel_type: ChannelType,
    adapter_key: &str,
    external_channel_id: &str,
    metadata: serde_json::Value,
) -> Result<EntryPointView, EntryPointError> {
    create_entry_point_with_secrets(
        pool,
        project_id,
        channel_type,
        adapter_key,
        external_channel_id,
        metadata,
        &[],
        None,
    )
    .await
}

/// Register an entry point with the secrets the webhook gateway verifies its requests with.
#[allow(clippy::too_many_arguments)]
pub async fn create_entry_point_with_secrets(
    pool: &PgPool,
    project_id: &str,
    channel_type: ChannelType,
    adapter_key: &str,
    external_channel_id: &str,
    metadata: serde_json::Value,
    webhook_secrets: &[String],
    verify_token: Option<&str>,
) -> Result<EntryPointView, EntryPointError> {
    let external = normalize_external_channel_id(channel_type, external_channel_id);
    // The first project to register this external id receives its unscoped traffic; two
    // registrations racing for that are settled by the partial unique index.
    let mut attempts = 0;
    let row = loop {
        attempts += 1;
        let inserted = sqlx::query(
            "INSERT INTO entry_points (id, project_id, channel_type, adapter_key, external_channel_id, metadata,
                                       webhook_secrets, verify_token, receives_unscoped)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8,
                    NOT EXISTS (SELECT 1 FROM entry_points
                                 WHERE channel_type = $3 AND external_channel_id = $5 AND receives_unscoped)
             ON CONFLICT (project_id, channel_type, external_channel_id) DO NOTHING
             RETURNING id, channel_type, adapter_key, created_at, updated_at, external_channel_id, metadata,
                       receives_unscoped",
        )
        .bind(Uuid::new_v4())
        .bind(project_id)
        .bind(channel_type.as_str())
        .bind(adapter_key)
        .bind(&external)
        .bind(&metadata)
        .bind(webhook_secrets)
        .bind(verify_token)
        .fetch_optional(pool)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e))
                if attempts < 3 && e.constraint() == Some("entry_points_unscoped_owner_idx") =>
            {
                continue
            }
            other => break other?,
        }
    };
    let row = row.ok_or_else(|| EntryPointError::Exists {
        channel_type: channel_type.to_string(),
        external_channel_id: external,
    })?;
    let mut view = entry_point_from_row(&row, false);
    view.receives_unscoped_traffic = Some(row.get("receives_unscoped"));
    Ok(view)
}

pub(super) fn entry_point_from_row(row: &sqlx::postgres::PgRow, is_entry_point: bool) -> EntryPointView {
    EntryPointView {
        id: row.get("id"),
        channel_type: row.get("channel_type"),
        adapter_key: row.get("adapter_key"),
        is_entry_point,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        external_channel_id: row.get("external_channel_id"),
        metadata: row.get("metadata"),
        receives_unscoped_traffic: None,
    }
}

pub async fn list_entry_points(pool: &PgPool, project_id: &str) -> Result<Vec<EntryPointView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, channel_type, adapter_key, created_at, updated_at, external_channel_id, metadata,
                receives_unscoped
           FROM entry_points WHERE project_id = $1 ORDER BY created_at, id",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| EntryPointView {
            receives_unscoped_traffic: Some(r.get("receives_unscoped")),
            ..entry_point_from_row(r, false)
        })
        .collect())
}

/// An entry point as the worker needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEntryPoint {
    pub id: Uuid,
    pub project_id: String,
    pub adapter_key: String,
    /// Normalized, as stored.
    pub external_channel_id: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no entry point for {channel_type} `{external_channel_id}`{}", project.as_ref().map(|p| format!(" in project `{p}`")).unwrap_or_default())]
    Unknown { channel_type: ChannelType, external_channel_id: String, project: Option<String> },
    #[error("{channel_type} `{external_channel_id}` is an entry point of several projects; the publisher must send the project id")]
    Ambiguous { channel_type: ChannelType, external_channel_id: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Resolve `(channelType, externalChannelId)` (and the project, when the publisher sent it).
pub async fn resolve_entry_point(
    pool: &PgPool,
    channel_type: ChannelType,
    external_channel_id: &str,
    project_id: Option<&str>,
) -> Result<ResolvedEntryPoint, ResolveError> {
    let external = normalize_external_channel_id(channel_type, external_channel_id);
    let rows = sqlx::query(
        "SELECT id, project_id, adapter_key, external_channel_id, metadata, receives_unscoped FROM entry_points
          WHERE channel_type = $1 AND external_channel_id = $2 AND ($3::text IS NULL OR project_id = $3)
          ORDER BY receives_unscoped DESC LIMIT 2",
    )
    .bind(channel_type.as_str())
    .bind(&external)
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    // Without a project, the owner of the unscoped traffic (the first to register); no owner
    // (its project was deleted) and one candidate: that one.
    let chosen = match rows.as_slice() {
        [row, ..] if project_id.is_none() && row.get::<bool, _>("receives_unscoped") => std::slice::from_ref(row),
        rows => rows,
    };
    match chosen {
        [row] => Ok(ResolvedEntryPoint {
            id: row.get("id"),
            project_id: row.get("project_id"),
            adapter_key: row.get("adapter_key"),
            external_channel_id: row.get("external_channel_id"),
            metadata: match row.get::<serde_json::Value, _>("metadata") {
                serde_json::Value::Object(map) => map,
                _ => Default::default(),
            },
        }),
        [] => Err(ResolveError::Unknown {
            channel_type,
            external_channel_id: external,
            project: project_id.map(str::to_owned),
        }),
        _ => Err(ResolveError::Ambiguous { channel_type, external_channel_id: external }),
    }
}

/// An entry point as the webhook gateway needs it: with its secrets.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GatewayEntryPoint {
    pub id: Uuid,
    pub project_id: String,
    pub adapter_key: String,
    pub external_channel_id: String,
    pub webhook_secrets: Vec<String>,
    pub verify_token: Option<String>,
}

/// Every entry point (of any project) for `(channelType, externalChannelId)`; the gateway
/// picks the one whose secret verifies the request.
pub async fn gateway_entry_points(
    pool: &PgPool,
    channel_type: ChannelType,
    external_channel_id: &str,
) -> Result<Vec<GatewayEntryPoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, adapter_key, external_channel_id, webhook_secrets, verify_token
           FROM entry_points WHERE channel_type = $1 AND external_channel_id = $2 ORDER BY created_at, id",
    )
    .bind(channel_type.as_str())
    .bind(normalize_external_channel_id(channel_type, external_channel_id))
    .fetch_all(pool)
    .await
}

/// Changes to an entry point; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct EntryPointChanges {
    pub metadata: Option<serde_json::Value>,
    pub webhook_secrets: Option<Vec<String>>,
    /// `Some(None)` clears it.
    pub verify_token: Option<Option<String>>,
}

/// Apply `changes` to an entry point of `project_id`; `None` when there is no such entry point.
pub async fn update_entry_point(
    pool: &PgPool,
    project_id: &str,
    id: Uuid,
    changes: &EntryPointChanges,
) -> Result<Option<EntryPointView>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE entry_points SET
            metadata = COALESCE($3, metadata),
            webhook_secrets = COALESCE($4, webhook_secrets),
            verify_token = CASE WHEN $5 THEN $6 ELSE verify_token END,
            updated_at = now()
          WHERE id = $1 AND project_id = $2
          RETURNING id, channel_type, adapter_key, created_at, updated_at, external_channel_id, metadata",
    )
    .bind(id)
    .bind(project_id)
    .bind(&changes.metadata)
    .bind(&changes.webhook_secrets)
    .bind(changes.verify_token.is_some())
    .bind(changes.verify_token.clone().flatten())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| entry_point_from_row(&r, false)))
}

/// The adapter key of an entry point of `project_id`.
pub async fn entry_point_adapter_key(pool: &PgPool, project_id: &str, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT adapter_key FROM entry_points WHERE id = $1 AND project_id = $2")
        .bind(id)
        .bind(project_id)
        .fetch_optional(pool)
        .await
}
