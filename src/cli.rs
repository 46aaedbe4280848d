//! The `intake` command line.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use intake_adapters::email::EmailConfig;
use intake_adapters::{AdapterRegistry, ChannelType};
use tokio_util::sync::CancellationToken;

use crate::amqp::dlq::{self, Selection};
use crate::amqp::publish::{new_message_properties, ConfirmedPublisher, LazyPublisher};
use crate::amqp::topology::Topology;
use crate::amqp::worker::{self, WorkerSettings};
use crate::amqp::{envelope, AmqpArgs};
use crate::attachments::AttachmentStore;
use crate::config::{DatabaseArgs, GatewayArgs, HttpArgs, LogFormat, UpdateArgs};
use crate::smtp::{Mailer, OutboundQueue, SmtpArgs};
use crate::{http, store};

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

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub smtp: SmtpArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub inbound_mail: crate::inbound_parse::InboundMailArgs,
    #[command(flatten)]
    pub health: crate::health::HealthArgs,
    #[command(flatten)]
    pub ops: crate::ops::OpsArgs,
}

#[derive(Debug, Args)]
pub struct GatewayCommandArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub inbound_mail: crate::inbound_parse::InboundMailArgs,
}

#[derive(Debug, Args)]
pub struct SmtpdCommandArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub smtpd: crate::smtpd::SmtpdArgs,
}

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

fn parse_channel_type(s: &str) -> Result<ChannelType, String> {
    s.parse()
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,

    /// Adapter key (`email`, `slack`, `telegram`, `whatsapp`, `twilio-sms`, `webhook`, …).
    #[arg(long)]
    pub adapter: String,

    /// Channel type; guessed from well-known adapter keys.
    #[arg(long, value_parser = parse_channel_type)]
    pub channel_type: Option<ChannelType>,

    /// The entry point's id in the outside system (mailbox, Slack channel, phone number).
    #[arg(long)]
    pub external_channel_id: Option<String>,

    /// Project (tenant) id, when the external id is an entry point of several projects.
    #[arg(long)]
    pub project: Option<String>,

    /// Content type; defaults to one that fits the channel.
    #[arg(long)]
    pub content_type: Option<String>,

    /// Files to publish, one message each; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: id, reason, adapter, attempts, age.
    List {
        #[command(flatten)]
        amqp: AmqpArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show one dead letter with its headers and body.
    Show {
        #[command(flatten)]
        amqp: AmqpArgs,
        /// Id from `dlq list`.
        id: String,
    },
    /// Publish dead letters back to their original routing key. Already applied messages are
    /// recognised by their idempotency key and change nothing.
    Replay {
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        selection: SelectionArgs,
        /// Messages per second (`N` or `N/s`; `0` for as fast as the broker confirms): a replay
        /// of a large backlog then leaves the workers room for live traffic.
        #[arg(long, default_value_t = dlq::DEFAULT_REPLAY_RATE)]
        rate: dlq::Rate,
    },
    /// Delete dead letters.
    Purge {
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        selection: SelectionArgs,
    },
}

#[derive(Debug, Args)]
pub struct SelectionArgs {
    /// Every dead letter.
    #[arg(long, conflicts_with_all = ["ids", "reason", "adapter", "channel_type", "external_channel_id", "older_than", "newer_than", "text"])]
    pub all: bool,
    /// Only those with this reason code (e.g. `unknown_entry_point`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those of this adapter key (e.g. `webhook`, `slack`).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Only those of this channel type (`email`, `chat`, `webhook`).
    #[arg(long)]
    pub channel_type: Option<String>,
    /// Only those published with this `x-intake-external-channel-id`.
    #[arg(long)]
    pub external_channel_id: Option<String>,
    /// Only those dead-lettered at least this long ago (e.g. `2h`, `7d`).
    #[arg(long, value_parser = crate::amqp::parse_duration)]
    pub older_than: Option<Duration>,
    /// Only those dead-lettered less than this long ago.
    #[arg(long, value_parser = crate::amqp::parse_duration)]
    pub newer_than: Option<Duration>,
    /// Only those whose body or error contains this text (case-insensitive).
    #[arg(long)]
    pub text: Option<String>,
    /// Ids from `dlq list`.
    #[arg(conflicts_with_all = ["reason", "adapter", "channel_type", "external_channel_id", "older_than", "newer_than", "text"])]
    pub ids: Vec<String>,
}

impl SelectionArgs {
    fn selection(&self) -> anyhow::Result<Selection> {
        let filter = dlq::Filter {
            reason: self.reason.clone(),
            adapter: self.adapter.clone(),
            channel_type: self.channel_type.clone(),
            external_channel_id: self.external_channel_id.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            text: self.text.clone(),
        };
        if self.all {
            Ok(Selection::All)
        } else if !self.ids.is_empty() {
            Ok(Selection::Ids(self.ids.clone()))
        } else if !filter.is_empty() {
            Ok(Selection::Matching(filter))
        } else {
            anyhow::bail!("say which dead letters: ids, --all, or filters (--reason, --adapter, --text, …)")
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ParkedCommand {
    /// List parked updates, oldest first: age, project, kind, the message key they wait for.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Show at most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
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
    crate::update::set_max_future_skew(cli.update.max_future_skew);
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
        Command::Serve(args) => {
            let ops = crate::ops::OpsConfig::from_args(&args.ops)?;
            let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
            register_tokens(&pool, &args.http).await?;
            // PATCHes change previews too: their search entries are refreshed here.
            let stop = tokio_util::sync::CancellationToken::new();
            let search = tokio::spawn(store::search::refresh_until(pool.clone(), stop.clone()));
            // Health gauges on /metrics.
            let sampler = Arc::new(args.health.sampler(pool.clone(), &args.amqp));
            let gauges = crate::health::GaugeLoop::start(sampler, args.health.health_sample_every);
            let router = api_router(pool, &args.http, &args.amqp, &args.smtp, &args.gateway, &args.inbound_mail, ops);
            let served = http::serve_router(bind(args.http.http_addr).await?, router, shutdown_signal()).await;
            stop.cancel();
            let _ = search.await;
            gauges.stop().await;
            served
        }
        Command::Gateway(args) => {
            let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
            let publisher = Arc::new(LazyPublisher::new(&args.amqp.amqp_url).declaring(Topology::from(&args.amqp)));
            let router = gateway_router(pool, publisher, &args.amqp, &args.gateway, &args.inbound_mail)
                .merge(http::health_router());
            http::serve_router(bind(args.gateway.gateway_addr).await?, router, shutdown_signal()).await
        }
        Command::Smtpd(args) => run_smtpd(db, args).await,
        Command::Parked(ParkedCommand::List { json, limit }) => {
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            let parked = crate::update::list_parked(&pool, limit).await?;
            if json {
                for p in &parked {
                    println!("{}", serde_json::to_string(p)?);
                }
            } else {
                println!("{:<10} {:<16} {:<8} KEY", "AGE", "PROJECT", "KIND");
                for p in &parked {
                    let age = (chrono::Utc::now() - p.parked_at).num_seconds().max(0);
                    let kind = p.kind.as_deref().unwrap_or("?");
                    println!("{:<10} {:<16} {:<8} {}", format!("{age}s"), p.project_id, kind, p.idempotency_key);
                }
                println!("{} parked", parked.len());
            }
            Ok(())
        }
        Command::Worker(args) => run_worker(db, args).await,
        Command::Publish(args) => publish(args).await,
        Command::Dlq(command) => run_dlq(command).await,
        Command::Bench(args) => crate::bench::run(&db.database_url, args).await,
    }
}

async fn run_worker(db: &DatabaseArgs, args: WorkerArgs) -> anyhow::Result<()> {
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

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let channel_type = args
        .channel_type
        .or_else(|| envelope::default_channel_type(&args.adapter))
        .ok_or_else(|| anyhow::anyhow!("`{}` is not a well-known adapter key: pass --channel-type", args.adapter))?;
    let routing_key = format!("{}.{}", channel_type, args.adapter);
    let content_type =
        args.content_type.clone().unwrap_or_else(|| envelope::default_content_type(channel_type, &args.adapter).into());
    // Reconnects (to another node of a cluster) and publishes again what was not confirmed.
    let publisher = LazyPublisher::new(&args.amqp.amqp_url).declaring(Topology::from(&args.amqp));
    for file in &args.files {
        let body = if file.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        } else {
            std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
        };
        let message_id = uuid::Uuid::new_v4().to_string();
        let mut headers = vec![(envelope::ADAPTER, args.adapter.clone())];
        if let Some(id) = &args.external_channel_id {
            headers.push((envelope::EXTERNAL_CHANNEL_ID, id.clone()));
        }
        if let Some(p) = &args.project {
            headers.push((envelope::PROJECT, p.clone()));
        }
        let properties = new_message_properties(&message_id, &content_type, headers);
        publisher.publish(&args.amqp.exchange, &routing_key, &body, properties).await?;
        println!("{message_id}\t{routing_key}\t{}", file.display());
    }
    publisher.close().await;
    Ok(())
}

async fn run_dlq(command: DlqCommand) -> anyhow::Result<()> {
    let amqp = match &command {
        DlqCommand::List { amqp, .. }
        | DlqCommand::Show { amqp, .. }
        | DlqCommand::Replay { amqp, .. }
        | DlqCommand::Purge { amqp, .. } => amqp,
    };
    let topology = Topology::from(amqp);
    let connection = crate::amqp::connect(&amqp.amqp_url, "intake-dlq").await?;
    let channel = connection.create_channel().await?;
    let result = dlq_command(&command, &topology, &connection, &channel).await;
    // The channel first (what was read and not settled goes back to the queue), then the
    // connection: see `amqp::close_channel`.
    crate::amqp::close_channel(&channel).await;
    crate::amqp::close_connection(&connection).await;
    result
}

// The arms pass `&channel` / `&connection` as they did when these were locals (a smaller diff
// beside the replay filters being added to the same arms); remove the allow once merged.
#[allow(clippy::needless_borrow)]
async fn dlq_command(
    command: &DlqCommand,
    topology: &Topology,
    connection: &lapin::Connection,
    channel: &lapin::Channel,
) -> anyhow::Result<()> {
    topology.declare(channel).await?;
    let queue = topology.dead_queue.as_str();
    match command {
        DlqCommand::List { json, limit, .. } => {
            let letters = dlq::list(&channel, queue, *limit).await?;
            let now = chrono::Utc::now();
            if *json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                println!(
                    "{:<14} {:<24} {:<12} {:>8} {:>6}  {:<36}  ERROR",
                    "ID", "REASON", "ADAPTER", "ATTEMPTS", "AGE", "MESSAGE_ID"
                );
                for d in &letters {
                    let error: String = d.error.chars().take(70).collect();
                    println!(
                        "{:<14} {:<24} {:<12} {:>8} {:>6}  {:<36}  {}",
                        d.id,
                        d.reason,
                        d.adapter,
                        d.attempts,
                        d.age(now),
                        d.message_id.as_deref().unwrap_or("-"),
                        error
                    );
                }
                eprintln!("{} dead letter(s) in `{queue}`", letters.len());
            }
        }
        DlqCommand::Show { id, .. } => {
            let letters = dlq::list(&channel, queue, usize::MAX).await?;
            let d = letters
                .iter()
                .find(|d| d.id == *id)
                .ok_or_else(|| anyhow::anyhow!("no dead letter `{id}` in `{queue}`"))?;
            println!("{}", serde_json::to_string_pretty(d)?);
            // Everything the message carries: e.g. `x-intake-external-channel-id`, the entry
            // point to register for an `unknown_entry_point`.
            let properties = d.properties();
            println!("--- properties ---");
            for (name, value) in crate::amqp::properties::property_lines(properties) {
                println!("{name}: {value}");
            }
            println!("--- headers ---");
            for (name, value) in crate::amqp::properties::header_lines(properties.headers().as_ref()) {
                println!("{name}: {value}");
            }
            println!("--- body ({} bytes) ---", d.size);
            println!("{}", String::from_utf8_lossy(&d.body));
        }
        DlqCommand::Replay { selection, .. } | DlqCommand::Purge { selection, .. } => {
            let rate = match &command {
                DlqCommand::Replay { rate, .. } => Some(*rate),
                _ => None,
            };
            let replay = rate.is_some();
            let selection = selection.selection()?;
            if !replay && matches!(selection, Selection::All) {
                let n = dlq::purge_all(&channel, queue).await?;
                println!("purged {n} dead letter(s)");
            } else {
                let total = dlq::depth(&channel, queue).await?;
                let bar = indicatif::ProgressBar::new(u64::from(total));
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_message(if replay { "replaying" } else { "purging" });
                let publisher = if replay { Some(ConfirmedPublisher::open(&connection).await?) } else { None };
                let mut failed = 0;
                let n = dlq::settle(&channel, publisher.as_ref(), queue, &selection, total as usize, rate, |step| {
                    if let dlq::Step::Failed(d, e) = step {
                        failed += 1;
                        bar.println(format!("{}: not replayed: {e}", d.id));
                    }
                    bar.inc(1)
                })
                .await?;
                if let Some(publisher) = &publisher {
                    crate::amqp::close_channel(publisher.channel()).await;
                }
                bar.finish_and_clear();
                println!("{} {n} dead letter(s)", if replay { "replayed" } else { "purged" });
                anyhow::ensure!(failed == 0, "{failed} dead letter(s) could not be replayed and stay in `{queue}`");
            }
        }
    }
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// The internal API with the webhook gateway mounted (both publish through one connection), and
/// the ops console when it is configured.
fn api_router(
    pool: sqlx::PgPool,
    http: &HttpArgs,
    amqp: &AmqpArgs,
    smtp: &SmtpArgs,
    gateway: &GatewayArgs,
    inbound_mail: &crate::inbound_parse::InboundMailArgs,
    ops: Option<crate::ops::OpsConfig>,
) -> axum::Router {
    let publisher = Arc::new(LazyPublisher::new(&amqp.amqp_url).declaring(Topology::from(amqp)));
    let outbound_email = smtp
        .smtp_url
        .as_ref()
        .map(|_| Arc::new(OutboundQueue { exchange: amqp.exchange.clone(), publisher: publisher.clone() }));
    let state = http::AppState { pool: pool.clone(), body_limit: http.http_body_limit, outbound_email };
    let console = ops.map(|config| {
        tracing::info!(operators = config.operators.len(), "ops console at /ops");
        crate::ops::router(crate::ops::OpsState::new(pool.clone(), amqp, config))
    });
    let router = http::router(state).merge(gateway_router(pool, publisher, amqp, gateway, inbound_mail));
    match console {
        Some(console) => router.merge(console),
        None => router,
    }
}

fn gateway_router(
    pool: sqlx::PgPool,
    publisher: Arc<LazyPublisher>,
    amqp: &AmqpArgs,
    args: &GatewayArgs,
    inbound_mail: &crate::inbound_parse::InboundMailArgs,
) -> axum::Router {
    // Inbound-parse webhooks of the mail providers, beside the gateway's own routes.
    let inbound = crate::inbound_parse::router(crate::inbound_parse::InboundMailState {
        pool: pool.clone(),
        publisher: publisher.clone(),
        exchange: amqp.exchange.clone(),
        credentials: inbound_mail.clone(),
        public_url: args.public_url.clone().filter(|u| !u.trim().is_empty()),
        tolerance_secs: args.signature_tolerance.as_secs() as i64,
    });
    crate::gateway::router(crate::gateway::GatewayState {
        pool,
        publisher,
        exchange: amqp.exchange.clone(),
        registry: AdapterRegistry::with_defaults(),
        public_url: args.public_url.clone().filter(|u| !u.trim().is_empty()),
        tolerance_secs: args.signature_tolerance.as_secs() as i64,
        body_limit: args.gateway_body_limit,
    })
    .merge(inbound)
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

async fn run_smtpd(db: &DatabaseArgs, args: SmtpdCommandArgs) -> anyhow::Result<()> {
    use crate::smtpd;
    let tls = match (&args.smtpd.tls_cert, &args.smtpd.tls_key) {
        (Some(cert), Some(key)) => Some(smtpd::tls::acceptor(cert, key)?),
        _ => None,
    };
    smtpd::check_bind(args.smtpd.addr, tls.is_some(), args.smtpd.allow_plaintext)?;
    let pool = store::connect_and_migrate(&db.database_url, db.db_max_connections).await?;
    let publisher = Arc::new(LazyPublisher::new(&args.amqp.amqp_url).declaring(Topology::from(&args.amqp)));
    let state = Arc::new(smtpd::SmtpdState {
        pool,
        publisher,
        exchange: args.amqp.exchange.clone(),
        settings: smtpd::SmtpdSettings::from(&args.smtpd),
        tls,
    });
    let listener = bind(args.smtpd.addr).await?;
    let protocol = if args.smtpd.lmtp { "LMTP" } else { "SMTP" };
    tracing::info!(addr = %args.smtpd.addr, protocol, starttls = state.tls.is_some(), "receiving mail");
    smtpd::serve(listener, state, shutdown_signal()).await
}
