//! The `intake` command line: the top-level flags and subcommands, and `run`, which hands each
//! subcommand to the module that carries it out.

mod dlq;
mod gateway;
mod parked;
mod publish;
mod routers;
mod serve;
mod serving;
mod smtpd;
mod token;
mod value_parsers;
mod worker;

use clap::{Parser, Subcommand};

use crate::config::{DatabaseArgs, LogFormat, UpdateArgs};
use crate::store;

// Re-exported so the argument types keep their `intake::cli::...` paths.
pub use dlq::{DlqCommand, SelectionArgs};
pub use gateway::GatewayCommandArgs;
pub use parked::ParkedCommand;
pub use publish::PublishArgs;
pub use serve::ServeArgs;
pub use serving::shutdown_signal;
pub use smtpd::SmtpdCommandArgs;
pub use token::TokenCommand;
pub use worker::WorkerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "intake",
    version,
    about = "Multi-channel message ingestion: consumes channel messages from RabbitMQ, applies them to \
             conversations in PostgreSQL, and serves the internal conversations API.",
    after_help = "Every flag can also be set by the environment variable shown in its help. \
                  See the README for the message contract and operations."
)]
pub struct Cli {
    /// Log format; levels come from RUST_LOG (default `info`).
    #[arg(long, env = "INTAKE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub update: UpdateArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the queue worker: declare the topology, consume, apply, ack (the main job).
    Worker(WorkerArgs),
    /// Serve the internal HTTP API (conversations, entry points, health, metrics) and the
    /// webhook gateway (`/hooks/...`).
    Serve(ServeArgs),
    /// Serve only the webhook gateway: `POST /hooks/{adapterKey}/{externalChannelId}` verifies
    /// the provider's signature and publishes the body to RabbitMQ. Safe to expose publicly.
    Gateway(GatewayCommandArgs),
    /// Receive mail over SMTP or LMTP (`--lmtp`) from an MTA: recipients are checked against
    /// the email entry points, and a mail is answered `250` only once RabbitMQ confirmed it
    /// (`451` otherwise, so the MTA retries).
    Smtpd(SmtpdCommandArgs),
    /// Publish files as messages (with publisher confirms), for integrators and tests.
    Publish(PublishArgs),
    /// Inspect, replay and purge dead-lettered messages.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Updates (edits, deletes, delivery statuses) waiting for a message that has not arrived.
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// Create the database if missing and apply migrations, then exit.
    Migrate,
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Benchmark against the local RabbitMQ and PostgreSQL: the real worker next to broker-only
    /// (ack multiple, ack each) and naive baselines, with CPU µs per message, publish→commit
    /// latency, bytes on disk per message, and scenarios (real-size mix, one hot
    /// conversation, a big table), on its own queues and database. `intake bench --help`
    /// explains the method.
    #[command(long_about = crate::bench::LONG_ABOUT)]
    Bench(crate::bench::BenchArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let db = &cli.database;
    crate::update::set_max_future_skew(cli.update.max_future_skew);
    match cli.command {
        Command::Migrate => {
            store::connect_and_migrate(&db.database_url, 2).await?;
            tracing::info!("database is migrated");
            Ok(())
        }
        Command::Token(command) => token::run_token(db, command).await,
        Command::Serve(args) => serve::run_serve(db, args).await,
        Command::Gateway(args) => gateway::run_gateway(db, args).await,
        Command::Smtpd(args) => smtpd::run_smtpd(db, args).await,
        Command::Parked(command) => parked::run_parked(db, command).await,
        Command::Worker(args) => worker::run_worker(db, args).await,
        Command::Publish(args) => publish::publish(args).await,
        Command::Dlq(command) => dlq::run_dlq(command).await,
        Command::Bench(args) => crate::bench::run(&db.database_url, args).await,
    }
}
