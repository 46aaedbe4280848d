//! PostgreSQL access that is not the update logic: connecting (creating the database when it is
//! missing), migrations, projects and tokens, entry points, and reading conversation views.

use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

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

/// How every intake connection is opened (the pools of [`connect`] and the bench's own).
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    // JIT off: the update's estimated cost (its subplans over `messages`) crosses
    // `jit_above_cost`, and compiling it took up to 200 ms per statement, on every execution,
    // for statements that run in a few milliseconds; OLTP statements never gain from it.
    Ok(PgConnectOptions::from_str(database_url)?
        .options([("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Trace))
}

pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = connect_options(database_url)?;
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

mod conversations;
mod entry_points;
pub mod search;

pub use conversations::*;
pub use entry_points::*;
