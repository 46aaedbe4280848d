//! `intake worker`: the queue worker (the main job), optionally serving the HTTP API beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use intake_adapters::email::EmailConfig;
use intake_adapters::{AdapterRegistry, ChannelType};
use tokio_util::sync::CancellationToken;

use super::routers::{api_router, register_tokens};
use super::serving::{bind, shutdown_signal};
use super::value_parsers::parse_channel_type;
use crate::amqp::topology::Topology;
use crate::amqp::worker::{self, WorkerSettings};
use crate::amqp::AmqpArgs;
use crate::attachments::AttachmentStore;
use crate::config::{DatabaseArgs, GatewayArgs, HttpArgs};
use crate::smtp::{Mailer, SmtpArgs};
use crate::{http, store};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,

    /// Unacked deliveries RabbitMQ may push to each consumer (at least the batch size).
    #[arg(long, env = "INTAKE_PREFETCH", default_value_t = crate::amqp::worker::DEFAULT_PREFETCH)]
    pub prefetch: u16,

    /// Deliveries applied in one database transaction.
    #[arg(long, env = "INTAKE_BATCH_SIZE", default_value_t = crate::amqp::worker::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,

    /// How long a batch waits to fill after its first delivery.
    #[arg(long, env = "INTAKE_BATCH_WAIT", default_value = "5ms", value_parser = crate::amqp::parse_duration)]
    pub batch_wait: Duration,

    /// Largest message body accepted; larger ones are dead-lettered (`payload_too_large`).
    #[arg(long, env = "INTAKE_MAX_MESSAGE_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Channel types to consume (comma-separated).
    #[arg(long, env = "INTAKE_WORKER_QUEUES", value_delimiter = ',', default_value = "email,chat,webhook", value_parser = parse_channel_type)]
    pub queues: Vec<ChannelType>,

    /// Keep attachment bytes in this directory (content-addressed by SHA-256). Unset: only
    /// attachment metadata (name, type, size, hash) is kept.
    #[arg(long, env = "INTAKE_ATTACHMENT_DIR")]
    pub attachment_dir: Option<PathBuf>,

    /// Attachments larger than this keep their metadata only.
    #[arg(long, env = "INTAKE_ATTACHMENT_MAX_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub attachment_max_bytes: u64,

    /// Also serve the HTTP API (and /metrics) from this process.
    #[arg(long, env = "INTAKE_WITH_API")]
    pub with_api: bool,

    /// An edit, delete or delivery status whose message has not arrived waits (parked) at most
    /// this long, then is dropped with a warning (`intake parked list` shows what waits).
    #[arg(long, env = "INTAKE_PARKED_MAX_AGE", default_value = "7d", value_parser = crate::amqp::parse_duration)]
    pub parked_max_age: Duration,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub smtp: SmtpArgs,

    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub inbound_mail: crate::inbound_parse::InboundMailArgs,
    /// With `--with-api`: the health gauges on `/metrics`.
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    #[command(flatten)]
    pub ops: crate::ops::OpsArgs,
}

pub(super) async fn run_worker(db: &DatabaseArgs, args: WorkerArgs) -> anyhow::Result<()> {
    // A bad INTAKE_OPS_TOKENS fails at start, not when someone first opens the console.
    let ops = crate::ops::OpsConfig::from_args(&args.ops)?;
    if ops.is_some() && !args.with_api {
        tracing::warn!("INTAKE_OPS_TOKENS is set but the worker serves no HTTP (add --with-api): no ops console");
    }
    // Like the broker connection, wait for a database that is down or restarting.
    let pool = store::connect_and_migrate_patiently(&db.database_url, db.db_max_connections, Duration::MAX).await?;
    let mut settings = WorkerSettings::new(Topology::from(&args.amqp));
    settings.prefetch = args.prefetch;
    settings.batch_size = args.batch_size;
    settings.batch_wait = args.batch_wait;
    settings.max_message_bytes = args.max_message_bytes;
    settings.channel_types = args.queues;
    settings.parked_max_age = args.parked_max_age;
    settings.mailer = Mailer::from_args(&args.smtp)?;
    settings.attachment_store = args.attachment_dir.as_ref().map(AttachmentStore::open).transpose()?;
    let registry = AdapterRegistry::with_email_config(EmailConfig {
        max_attachment_bytes: args.attachment_max_bytes,
        keep_attachment_content: settings.attachment_store.is_some(),
    });
    let shutdown = CancellationToken::new();
    let api = if args.with_api {
        register_tokens(&pool, &args.http).await?;
        let sampler = Arc::new(args.health.sampler(pool.clone(), &args.amqp));
        let gauges = crate::health::GaugeLoop::start(sampler, args.health.health_sample_every);
        let router =
            api_router(pool.clone(), &args.http, &args.amqp, &args.smtp, &args.gateway, &args.inbound_mail, ops);
        let listener = bind(args.http.http_addr).await?;
        let stop = shutdown.clone();
        Some((tokio::spawn(http::serve_router(listener, router, async move { stop.cancelled().await })), gauges))
    } else {
        crate::metrics::handle();
        None
    };
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let worked = worker::run(pool, registry, args.amqp.amqp_url.clone(), settings, shutdown).await;
    if let Some((api, gauges)) = api {
        gauges.stop().await;
        api.await??;
    }
    worked?;
    tracing::info!("worker stopped");
    Ok(())
}
