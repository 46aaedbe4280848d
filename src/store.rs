//! PostgreSQL access that is not the update logic: connecting (creating the database when it is
//! missing), migrations, projects and tokens, entry points, and reading conversation views.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use intake_adapters::ChannelType;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Row};
use uuid::Uuid;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connect to `database_url`, creating the database first if it does not exist, and apply
/// migrations.
pub async fn connect_and_migrate(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    create_database_if_missing(database_url).await?;
    let pool = connect(database_url, max_connections).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// [`connect_and_migrate`] for long-running processes (the worker): while PostgreSQL is
/// unreachable (refused, starting up, shutting down) keep trying with backoff, for at most
/// `wait`, instead of failing at once. A worker started during a database restart then comes
/// up when the database does, as it already does for RabbitMQ. Other errors (bad URL,
/// authentication, a failing migration) fail at once.
pub async fn connect_and_migrate_patiently(
    database_url: &str,
    max_connections: u32,
    wait: Duration,
) -> anyhow::Result<PgPool> {
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(250);
    loop {
        match connect_and_migrate(database_url, max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(e) if is_unreachable(&e) && started.elapsed() + backoff < wait => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "database unreachable; waiting for it");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The database is not there (yet): connection refused or reset, timed out, or the server is
/// starting up or shutting down (SQLSTATE class 57P).
fn is_unreachable(e: &anyhow::Error) -> bool {
    fn sqlx_unreachable(e: &sqlx::Error) -> bool {
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("57P")),
            _ => false,
        }
    }
    match (e.downcast_ref::<sqlx::Error>(), e.downcast_ref::<sqlx::migrate::MigrateError>()) {
        (Some(e), _) => sqlx_unreachable(e),
        (_, Some(sqlx::migrate::MigrateError::Execute(e))) => sqlx_unreachable(e),
        _ => false,
    }
}

pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(database_url)?.log_statements(tracing::log::LevelFilter::Trace);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    Ok(pool)
}

pub async fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(database_url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Create the project if missing and register the token for it (idempotent).
pub async fn ensure_project_token(pool: &PgPool, project_id: &str, token: &str, label: &str) -> anyhow::Result<()> {
    ensure_project(pool, project_id).await?;
    let hash = hash_token(token);
    let owner: Option<String> = sqlx::query_scalar(
        "INSERT INTO api_tokens (token_sha256, project_id, label) VALUES ($1, $2, $3)
         ON CONFLICT (token_sha256) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256
         RETURNING project_id",
    )
    .bind(&hash)
    .bind(project_id)
    .bind(label)
    .fetch_optional(pool)
    .await?;
    if let Some(owner) = owner.filter(|o| o != project_id) {
        anyhow::bail!(
            "that token is already registered for project `{owner}`; use a different token for `{project_id}`"
        );
    }
    Ok(())
}

pub async fn ensure_project(pool: &PgPool, project_id: &str) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO projects (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(project_id)
        .execute(pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create project `{project_id}`: {e}"))?;
    Ok(())
}

/// The project a bearer token belongs to.
pub async fn project_for_token(pool: &PgPool, token: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT project_id FROM api_tokens WHERE token_sha256 = $1")
        .bind(hash_token(token))
        .fetch_optional(pool)
        .await
}

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

fn entry_point_from_row(row: &sqlx::postgres::PgRow, is_entry_point: bool) -> EntryPointView {
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

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationMetadataView {
    pub tags: Vec<String>,
    pub assigned_to_user_id: Option<String>,
    pub assigned_to_display_name: Option<String>,
    pub first_response_due_at: Option<DateTime<Utc>>,
    pub first_response_at: Option<DateTime<Utc>>,
    pub next_response_due_at: Option<DateTime<Utc>>,
    pub last_customer_reply_at: Option<DateTime<Utc>>,
    pub last_agent_reply_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub conversation_id: Uuid,
    /// `open`, `pending` (an agent answered last) or `closed`.
    pub status: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// The caller's `source` (POST), else the channel type it was opened through, else `api`.
    pub source: String,
    /// `messageType` of the newest message; null without messages.
    pub last_message_type: Option<String>,
    pub subject: Option<String>,
    pub last_activity_at: DateTime<Utc>,
    pub metadata: ConversationMetadataView,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub user_display_name: Option<String>,
    pub user_primary_email: Option<String>,
    pub user_profile_image_url: Option<String>,
    pub preview: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_outbound_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub record_metadata: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SenderView {
    /// `user` (the customer), `agent`, or `system` (status changes).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub sender_type: &'static str,
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub primary_email: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub conversation_id: Uuid,
    pub subject: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub attachments: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub sender: SenderView,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub body: String,
    /// `message`, `internal-note` or `status-change`.
    pub message_type: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// The response body of the conversations API: the conversation, a page of its messages
/// (the newest, oldest first) and its entry points.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationBundle {
    pub conversation: ConversationView,
    pub messages: Vec<MessageView>,
    pub entry_points: Vec<EntryPointView>,
    /// Older messages exist than the first one returned.
    pub has_more_messages: bool,
    /// `before` for the page of older messages; null when there are none.
    pub next_cursor: Option<String>,
}

/// Load a conversation with all its messages (oldest first) and entry points; `None` when it
/// does not exist in this project. For tools and tests: the API reads pages
/// ([`crate::read::conversation_page`]).
pub async fn load_conversation(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
) -> Result<Option<ConversationBundle>, sqlx::Error> {
    crate::read::conversation_page(pool, project_id, conversation_id, &crate::read::MessagePage::all()).await
}

/// Reads a conversation (`c`) with what [`conversation_view`] derives.
pub(crate) const CONVERSATION_SELECT: &str = "SELECT c.*,
        coalesce(c.source, (SELECT ep.channel_type FROM entry_points ep WHERE ep.id = c.origin_entry_point_id),
                 'api') AS source_name,
        (SELECT m.message_type FROM messages m WHERE m.conversation_id = c.id
          ORDER BY m.occurred_at DESC, m.idempotency_key DESC LIMIT 1) AS last_message_type
   FROM conversations c";

/// A conversation row ([`CONVERSATION_SELECT`]) as the API shows it.
pub(crate) fn conversation_view(row: &sqlx::postgres::PgRow) -> ConversationView {
    ConversationView {
        conversation_id: row.get("id"),
        status: row.get("status"),
        priority: row.get("priority"),
        source: row.get("source_name"),
        last_message_type: row.get("last_message_type"),
        subject: row.get("subject"),
        last_activity_at: row.get("last_activity_at"),
        metadata: ConversationMetadataView {
            tags: row.get("tags"),
            assigned_to_user_id: row.get("assigned_to_user_id"),
            assigned_to_display_name: row.get("assigned_to_display_name"),
            first_response_due_at: row.get("first_response_due_at"),
            first_response_at: row.get("first_response_at"),
            next_response_due_at: row.get("next_response_due_at"),
            last_customer_reply_at: row.get("last_customer_reply_at"),
            last_agent_reply_at: row.get("last_agent_reply_at"),
        },
        user_id: row.get("user_id"),
        team_id: row.get("team_id"),
        user_display_name: row.get("user_display_name"),
        user_primary_email: row.get("user_primary_email"),
        user_profile_image_url: row.get("user_profile_image_url"),
        preview: row.get("preview"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        last_message_at: row.get("last_message_at"),
        last_inbound_at: row.get("last_inbound_at"),
        last_outbound_at: row.get("last_outbound_at"),
        closed_at: row.get("closed_at"),
        record_metadata: row.get("record_metadata"),
    }
}

/// The columns [`message_view`] reads.
pub(crate) const MESSAGE_COLUMNS: &str = "idempotency_key, conversation_id, subject, attachments, occurred_at, \
    sender_id, sender_display_name, sender_primary_email, user_id, team_id, body, metadata, direction, \
    is_auto_reply, id, delivery_state, external_id, message_type";

/// A message row ([`MESSAGE_COLUMNS`]) as the API shows it.
pub(crate) fn message_view(r: &sqlx::postgres::PgRow) -> MessageView {
    // direction and the auto-reply flag are not columns of the spec's message shape:
    // expose them in metadata where callers look for channel facts.
    let mut metadata: serde_json::Value = r.get("metadata");
    if let Some(map) = metadata.as_object_mut() {
        map.insert("direction".into(), serde_json::Value::String(r.get("direction")));
        let auto: bool = r.get("is_auto_reply");
        if auto {
            map.insert("autoReply".into(), map.get("autoReply").cloned().unwrap_or(true.into()));
        }
        let internal_id: Uuid = r.get("id");
        map.insert("intakeMessageId".into(), internal_id.to_string().into());
        if let Some(state) = r.get::<Option<String>, _>("delivery_state") {
            map.entry("deliveryStatus").or_insert(state.into());
        }
        if let Some(external) = r.get::<Option<String>, _>("external_id") {
            map.entry("messageId").or_insert(external.into());
        }
    }
    let message_type: String = r.get("message_type");
    let direction: String = r.get("direction");
    let sender_type = match (message_type.as_str(), direction.as_str()) {
        ("status-change", _) => "system",
        (_, "inbound") => "user",
        _ => "agent",
    };
    MessageView {
        id: r.get("idempotency_key"),
        conversation_id: r.get("conversation_id"),
        subject: r.get("subject"),
        attachments: r.get("attachments"),
        created_at: r.get("occurred_at"),
        sender: SenderView {
            sender_type,
            id: r.get("sender_id"),
            display_name: r.get("sender_display_name"),
            primary_email: r.get("sender_primary_email"),
        },
        user_id: r.get("user_id"),
        team_id: r.get("team_id"),
        body: r.get("body"),
        message_type,
        metadata,
    }
}

/// One message of a conversation by its idempotency key.
pub async fn load_message(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
    key: &str,
) -> Result<Option<MessageView>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE project_id = $1 AND idempotency_key = $2 AND conversation_id = $3"
    ))
    .bind(project_id)
    .bind(key)
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(message_view))
}

/// The entry points a conversation is reached through.
pub(crate) async fn conversation_entry_points(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Vec<EntryPointView>, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT e.id, e.channel_type, e.adapter_key, e.created_at, e.updated_at, e.external_channel_id,
                e.metadata, l.is_entry_point
           FROM conversation_entry_points l JOIN entry_points e ON e.id = l.entry_point_id
          WHERE l.conversation_id = $1 ORDER BY l.created_at, e.id",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| entry_point_from_row(r, r.get("is_entry_point")))
    .collect())
}

/// Create an empty conversation reached through `entry_point_id` (HTTP API).
pub async fn create_conversation(
    pool: &PgPool,
    project_id: &str,
    entry_point_id: Option<Uuid>,
    subject: Option<&str>,
    source: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(ep) = entry_point_id {
        let known: Option<Uuid> = sqlx::query_scalar("SELECT id FROM entry_points WHERE id = $1 AND project_id = $2")
            .bind(ep)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Ok(None);
        }
    }
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO conversations (id, project_id, origin_entry_point_id, subject, source) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(project_id)
    .bind(entry_point_id)
    .bind(subject)
    .bind(source)
        .execute(&mut *tx)
        .await?;
    if let Some(ep) = entry_point_id {
        sqlx::query(
            "INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point) VALUES ($1, $2, true)",
        )
        .bind(id)
        .bind(ep)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(id))
}

/// The adapter key of the email entry point a conversation was opened through, if it was.
pub async fn origin_email_adapter(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT ep.adapter_key FROM conversations c JOIN entry_points ep ON ep.id = c.origin_entry_point_id
          WHERE c.id = $1 AND c.project_id = $2 AND ep.channel_type = 'email'",
    )
    .bind(conversation_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await
}

/// Whether a message still waits for delivery.
pub async fn is_pending(pool: &PgPool, project_id: &str, key: &str) -> Result<bool, sqlx::Error> {
    let state: Option<Option<String>> =
        sqlx::query_scalar("SELECT delivery_state FROM messages WHERE project_id = $1 AND idempotency_key = $2")
            .bind(project_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
    Ok(state.flatten().as_deref() == Some("pending"))
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
