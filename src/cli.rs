//! The `intake` command line.

use clap::{Parser, Subcommand};

use crate::config::{DatabaseArgs, HttpArgs, LogFormat};
use crate::{http, store};

#[derive(Debug, Parser)]
#[command(
    name = "intake",
    version,
    about = "Multi-channel message ingestion: consumes channel messages from RabbitMQ, applies them to \
             conversations in PostgreSQL, and serves the internal conversations API.",
    long_about = None
)]
pub struct Cli {
    /// Log format; levels come from RUST_LOG (default `info`).
    #[arg(long, env = "INTAKE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the internal HTTP API (conversations, entry points, health, metrics).
    Serve(HttpArgs),
    /// Create the database if missing and apply migrations, then exit.
    Migrate,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a random token for a project (creating the project if needed) and print it once.
    Create {
        /// Project (tenant) id: letters, digits, `_`, `-`, `.`.
        #[arg(long)]
        project: String,
        /// A note to recognise the token by later.
        #[arg(long)]
        label: Option<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let db = &cli.database;
    match cli.command {
        Command::Migrate => {
            store::connect_and_migrate(&db.database_url, 2).await?;
            tracing::info!("database is migrated");
            Ok(())
        }
        Command::Token(TokenCommand::Create { project, label }) => {
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            let token = format!("itk_{}", hex::encode(rand::random::<[u8; 24]>()));
            store::ensure_project_token(&pool, &project, &token, label.as_deref().unwrap_or("cli")).await?;
            println!("{token}");
            Ok(())
        }
        Command::Serve(http_args) => {
            let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
            register_tokens(&pool, &http_args).await?;
            let state = http::AppState { pool, body_limit: http_args.http_body_limit };
            http::serve(http_args.http_addr, state, shutdown_signal()).await
        }
    }
}

pub(crate) async fn register_tokens(pool: &sqlx::PgPool, args: &HttpArgs) -> anyhow::Result<()> {
    for (project, token) in args.token_pairs()? {
        store::ensure_project_token(pool, &project, &token, "INTAKE_API_TOKENS").await?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
