//! `intake bench`: throughput and latency of the worker against the local RabbitMQ and
//! PostgreSQL, next to the two baselines that bound it.
//!
//! Everything runs in one invocation, on names of its own (exchange and queues `bench_<id>.*`,
//! database `intake_bench_<id>`), and is removed at the end (the database is kept with
//! `--keep`):
//!
//! 1. **broker only**: publish N persistent ~1 KB webhook messages (confirmed), then consume
//!    them with a consumer that does nothing but ack each delivery (prefetch as the worker's):
//!    the broker's own limit on this machine;
//! 2. **naive worker**: one consumer, each delivery decoded, applied in its own transaction
//!    through [`crate::update::apply`] and acked on its own;
//! 3. **intake**: the real `intake worker` binary (this executable), default settings, as child
//!    processes; also a sweep over worker counts and batch sizes;
//! 4. **latency**: a separate paced run at a fixed share of the measured intake throughput,
//!    publish → commit, seen through `NOTIFY` from a trigger the bench adds to its own database
//!    (delivered by PostgreSQL when the worker's transaction commits).
//!
//! Throughput runs use a pre-published backlog: publish N, then start the consumers and time
//! from the first delivery (the queue depth first dropping) until all N rows are visible in
//! PostgreSQL (or, for broker-only, the last ack). CPU seconds come from `/proc/<pid>/stat`.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use intake_adapters::{AdapterRegistry, ChannelType, Delivery as AdapterDelivery, EntryPointInfo, Headers};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::process::{Child, Command};

use crate::amqp::envelope;
use crate::amqp::publish::{new_message_properties, ConfirmedPublisher};
use crate::amqp::topology::Topology;
use crate::config::DEFAULT_AMQP_URL;
use crate::store;
use crate::update::{self, MessageExtras, Target, UpdateRequest};

const PROJECT: &str = "bench";
const ROUTING_KEY: &str = "webhook.webhook";
/// Worker defaults (see `intake worker --help`); the naive and broker-only consumers use the
/// same prefetch.
const DEFAULT_PREFETCH: u16 = 200;
const DEFAULT_BATCH: usize = 100;
const NOTIFY_CHANNEL: &str = "intake_bench_commit";
/// `/proc/<pid>/stat` counts CPU time in clock ticks; USER_HZ is 100 on Linux.
const CLOCK_TICKS: f64 = 100.0;

/// The long help of `intake bench` (how it measures).
pub const LONG_ABOUT: &str =
    "Measure intake against the local RabbitMQ and PostgreSQL, next to two baselines, in one run.\n\n\
        All runs use durable queues, persistent messages and ~1 KB generic-webhook JSON payloads (routing key \
        `webhook.webhook`) spread over --conversations conversations on --entry-points entry points. The bench \
        makes its own exchange and queues (`bench_<id>.*`, deleted at the end) and its own database \
        (`intake_bench_<id>` on the DATABASE_URL server, dropped at the end unless --keep).\n\n\
        Runs:\n\
        \x20 broker-only  publish N (confirmed; publish rate reported), then a consumer that only acks each \
        delivery (prefetch 200) drains them: the broker's limit.\n\
        \x20 naive        one consumer, one transaction (update::apply) and one ack per message, prefetch 200 \
        (N = --slow-messages, like the batch-size-1 sweep point).\n\
        \x20 intake       the real `intake worker` (this binary) as child processes with default settings \
        (prefetch 200, batch 100, wait 5ms); then a sweep over --workers and --batch-sizes.\n\
        \x20 latency      a paced run at --latency-load x the measured intake rate for --latency-secs, one \
        default worker.\n\n\
        Throughput: N messages are published first; the clock runs from the first delivery (queue depth \
        first drops) to the moment all N rows are visible in PostgreSQL (last ack for broker-only), so \
        publish and consume rates are measured separately and runs are comparable.\n\n\
        Latency: publish -> commit. The bench notes the time just before it publishes each message; a \
        trigger it adds to its own database (for this run only) sends NOTIFY with the message's key, which \
        PostgreSQL delivers only when the worker's transaction commits; the bench notes when that arrives. \
        So the figure includes broker queueing, batching wait, the transaction and the NOTIFY delivery; it \
        is an upper bound on publish->commit by the bench's own scheduling delay.\n\n\
        CPU seconds are read from /proc/<pid>/stat: the worker processes, this process (for in-process \
        consumers), RabbitMQ's beam.smp, the PostgreSQL backends connected to the bench database, and \
        PostgreSQL's WAL writer/checkpointer/background writer. beam.smp and the PostgreSQL helpers are \
        shared with anything else running on the machine.\n\n\
        At the end every run's row count is checked against the number published (each message applied \
        exactly once, nothing dead-lettered, queues empty). With the defaults the whole bench takes about \
        1.5 minutes on a 2-core machine; other load on the machine moves the numbers, so compare the ratios \
        of one run.";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// RabbitMQ URL.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,

    /// Messages per throughput run (broker-only, intake, each sweep point).
    #[arg(long, default_value_t = 40_000)]
    pub messages: usize,

    /// Messages for the naive run and for sweep points with batch size 1 (they are much
    /// slower); default: a quarter of --messages.
    #[arg(long)]
    pub slow_messages: Option<usize>,

    /// Worker process counts of the sweep (default batch size).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,

    /// Batch sizes of the sweep (one worker process).
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100,200")]
    pub batch_sizes: Vec<usize>,

    /// Distinct conversations (conversationKey values) per run.
    #[arg(long, default_value_t = 500)]
    pub conversations: usize,

    /// Entry points registered in the bench database; conversations are spread over them.
    #[arg(long, default_value_t = 20)]
    pub entry_points: usize,

    /// Rate of the latency run as a share of the measured intake throughput.
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,

    /// Length of the paced latency run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,

    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Keep the bench database and the workers' log (their names are printed).
    #[arg(long)]
    pub keep: bool,
}

/// One throughput run.
#[derive(Debug, Clone)]
struct RunResult {
    name: String,
    messages: usize,
    publish_secs: f64,
    consume_secs: f64,
    cpu: Vec<(String, f64)>,
    workers: usize,
    batch_size: Option<usize>,
    /// Rows the run added (None for broker-only).
    applied: Option<i64>,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.consume_secs.max(1e-9)
    }
    fn publish_rate(&self) -> f64 {
        self.messages as f64 / self.publish_secs.max(1e-9)
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "messages": self.messages,
            "workers": self.workers,
            "batchSize": self.batch_size,
            "publishSeconds": self.publish_secs,
            "publishRate": self.publish_rate(),
            "consumeSeconds": self.consume_secs,
            "rate": self.rate(),
            "applied": self.applied,
            "cpuSeconds": self.cpu.iter().map(|(k, v)| (k.clone(), json!((v * 100.0).round() / 100.0))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

#[derive(Debug, Clone)]
struct LatencyResult {
    target_rate: f64,
    achieved_rate: f64,
    messages: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

struct Bench {
    args: BenchArgs,
    id: String,
    topology: Topology,
    db_url: String,
    db_name: String,
    pool: PgPool,
    connection: Connection,
    publisher: ConfirmedPublisher,
    channel: Channel,
    /// Rows expected in `messages` so far.
    expected_rows: i64,
    next_run: usize,
    payload_bytes: usize,
    log: bool,
}

pub async fn run(database_url: &str, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.messages >= 1, "--messages must be at least 1");
    anyhow::ensure!(
        args.conversations >= 1 && args.entry_points >= 1,
        "need at least one conversation and entry point"
    );
    anyhow::ensure!(args.workers.iter().all(|w| *w >= 1), "--workers entries must be at least 1");
    anyhow::ensure!(args.batch_sizes.iter().all(|b| *b >= 1), "--batch-sizes entries must be at least 1");
    anyhow::ensure!(args.latency_load > 0.0, "--latency-load must be positive");
    let id = hex::encode(rand::random::<[u8; 4]>());
    let db_name = format!("intake_bench_{id}");
    let db_url = with_database(database_url, &db_name);
    let mut topology = Topology::with_prefix(&format!("bench_{id}"));
    // The worker declares the default retry queues; declare (and delete) the same.
    topology.retry_delays = ["1s", "5s", "30s", "2m", "10m"]
        .iter()
        .map(|d| crate::amqp::parse_duration(d).expect("static duration"))
        .collect();

    let pool = store::connect_and_migrate(&db_url, 4).await?;
    let connection = crate::amqp::connect(&args.amqp_url, "intake-bench").await?;
    let publisher = ConfirmedPublisher::open(&connection).await?;
    topology.declare(publisher.channel()).await?;
    let channel = connection.create_channel().await?;
    let log = !args.json;
    let mut bench = Bench {
        args,
        id,
        topology,
        db_url,
        db_name,
        pool,
        connection,
        publisher,
        channel,
        expected_rows: 0,
        next_run: 0,
        payload_bytes: 0,
        log,
    };
    let result = bench.run_all().await;
    let cleanup = bench.cleanup().await;
    let log = bench.worker_log_path();
    if let Err(e) = result {
        return Err(e.context(format!("worker output is in {}", log.display())));
    }
    if bench.args.keep {
        eprintln!("worker output kept in {}", log.display());
    } else {
        let _ = std::fs::remove_file(log);
    }
    cleanup
}

impl Bench {
    fn say(&self, line: impl AsRef<str>) {
        if self.log {
            eprintln!("{}", line.as_ref());
        }
    }

    async fn run_all(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        store::ensure_project(&self.pool, PROJECT).await?;
        for ep in 0..self.args.entry_points {
            store::create_entry_point(
                &self.pool,
                PROJECT,
                ChannelType::Webhook,
                "webhook",
                &entry_point_name(ep),
                json!({}),
            )
            .await?;
        }
        self.say(format!(
            "bench {}: database {}, queues {}.*, {} messages per run, {} conversations, {} entry points",
            self.id,
            self.db_name,
            self.topology.queue_prefix,
            self.args.messages,
            self.args.conversations,
            self.args.entry_points
        ));
        let n = self.args.messages;
        let slow = self.args.slow_messages.unwrap_or((n / 4).max(1));

        let broker = self.run_broker_only(n).await?;
        // The in-process naive consumer logs like a worker with RUST_LOG=warn (as the child
        // workers do), not one line per new conversation.
        let quiet = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .finish();
        let naive = tracing::instrument::WithSubscriber::with_subscriber(self.run_naive(slow), quiet).await?;
        let intake = self.run_workers("intake (default)", n, 1, None).await?;

        let mut sweep_workers = Vec::new();
        for &w in &self.args.workers.clone() {
            let r = if w == 1 {
                intake.clone()
            } else {
                self.run_workers(&format!("intake x{w} workers"), n, w, None).await?
            };
            sweep_workers.push(r);
        }
        let mut sweep_batches = Vec::new();
        for &b in &self.args.batch_sizes.clone() {
            let r = if b == DEFAULT_BATCH {
                intake.clone()
            } else {
                let count = if b == 1 { slow } else { n };
                self.run_workers(&format!("intake batch {b}"), count, 1, Some(b)).await?
            };
            sweep_batches.push(r);
        }
        let latency = self.run_latency(intake.rate() * self.args.latency_load).await?;
        let (total, distinct) = self.final_check().await?;
        let elapsed = started.elapsed().as_secs_f64();

        if self.args.json {
            let doc = json!({
                "bench": self.id,
                "database": self.db_name,
                "payloadBytesAvg": self.payload_bytes,
                "conversations": self.args.conversations,
                "entryPoints": self.args.entry_points,
                "brokerOnly": broker.json(),
                "naive": naive.json(),
                "intake": intake.json(),
                "ratios": {
                    "intakeOverBrokerOnly": intake.rate() / broker.rate(),
                    "intakeOverNaive": intake.rate() / naive.rate(),
                },
                "latency": {
                    "method": "paced run; bench publish time -> NOTIFY delivered at the worker's commit",
                    "targetRate": latency.target_rate,
                    "achievedRate": latency.achieved_rate,
                    "messages": latency.messages,
                    "p50Ms": latency.p50_ms,
                    "p99Ms": latency.p99_ms,
                    "maxMs": latency.max_ms,
                },
                "sweepWorkers": sweep_workers.iter().map(RunResult::json).collect::<Vec<_>>(),
                "sweepBatchSizes": sweep_batches.iter().map(RunResult::json).collect::<Vec<_>>(),
                "check": {"rowsExpected": self.expected_rows, "rows": total, "distinctKeys": distinct, "exactlyOnce": true},
                "elapsedSeconds": elapsed,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(());
        }

        println!();
        println!(
            "intake bench: {} msgs/run (naive and batch 1: {slow}), ~{} B webhook JSON, {} conversations, {} entry points, durable queues, persistent messages",
            n, self.payload_bytes, self.args.conversations, self.args.entry_points
        );
        println!();
        println!("{:<22} {:>8} {:>12} {:>12}  CPU seconds", "run", "msgs", "publish/s", "consume/s");
        for r in [&broker, &naive, &intake] {
            print_run(r);
        }
        println!();
        println!(
            "ratios: intake / broker-only = {:.2}   intake / naive = {:.1}",
            intake.rate() / broker.rate(),
            intake.rate() / naive.rate()
        );
        println!(
            "latency (paced at {:.0} msg/s = {:.0}% of intake, {} msgs, 1 worker): publish->commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latency.achieved_rate,
            self.args.latency_load * 100.0,
            latency.messages,
            latency.p50_ms,
            latency.p99_ms,
            latency.max_ms
        );
        println!();
        println!("sweep: worker processes (batch {DEFAULT_BATCH})");
        println!("{:<22} {:>8} {:>12} {:>12}  CPU seconds", "run", "msgs", "publish/s", "consume/s");
        for r in &sweep_workers {
            print_run(r);
        }
        println!();
        println!("sweep: batch size (1 worker)");
        println!("{:<22} {:>8} {:>12} {:>12}  CPU seconds", "run", "msgs", "publish/s", "consume/s");
        for r in &sweep_batches {
            print_run(r);
        }
        println!();
        println!(
            "check: {total} rows, {distinct} distinct idempotency keys, {} published to workers: every message applied exactly once; dead queue empty",
            self.expected_rows
        );
        println!("elapsed: {elapsed:.0} s");
        Ok(())
    }

    /// Bodies for one run: keys `r<run>-<i>`, conversations `r<run>-c<n>` over the entry points.
    fn payloads(&mut self, count: usize) -> (usize, Vec<Vec<u8>>) {
        let run = self.next_run;
        self.next_run += 1;
        let bodies: Vec<Vec<u8>> =
            (0..count).map(|i| payload(run, i, self.args.conversations, self.args.entry_points)).collect();
        self.payload_bytes = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1);
        (run, bodies)
    }

    /// Publish a backlog with pipelined confirms; returns the seconds it took.
    async fn publish_backlog(&self, bodies: Vec<Vec<u8>>) -> anyhow::Result<f64> {
        let n = bodies.len();
        let started = Instant::now();
        let items = bodies.into_iter().enumerate().map(|(i, body)| {
            let props = new_message_properties(
                &format!("bench-{}-{i}", self.id),
                "application/json",
                [(envelope::ADAPTER, "webhook".to_owned())],
            );
            (ROUTING_KEY.to_owned(), body, props)
        });
        self.publisher.publish_pipelined(&self.topology.exchange, items, 1000).await?;
        let secs = started.elapsed().as_secs_f64();
        let depth = self.depth().await?;
        anyhow::ensure!(depth as usize == n, "queue holds {depth} messages after publishing {n}");
        Ok(secs)
    }

    fn queue(&self) -> String {
        self.topology.queue(ChannelType::Webhook)
    }

    async fn queue_state(&self, queue: &str) -> anyhow::Result<(u32, u32)> {
        let q = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        Ok((q.message_count(), q.consumer_count()))
    }

    async fn depth(&self) -> anyhow::Result<u32> {
        Ok(self.queue_state(&self.queue()).await?.0)
    }

    async fn rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&self.pool).await?)
    }

    /// A consumer of the bench queue on a channel of its own, with the worker's default prefetch.
    async fn consume_backlog(&self) -> anyhow::Result<(Channel, lapin::Consumer)> {
        let channel = self.connection.create_channel().await?;
        channel.basic_qos(DEFAULT_PREFETCH, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                self.queue().as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    async fn run_broker_only(&mut self, n: usize) -> anyhow::Result<RunResult> {
        self.say(format!("[broker-only] publishing {n}…"));
        let (_, bodies) = self.payloads(n);
        let publish_secs = self.publish_backlog(bodies).await?;
        self.say(format!("[broker-only] consuming {n} with an ack-only consumer…"));
        let before = CpuSnapshot::take(&self.db_name, &[]);
        let (channel, mut consumer) = self.consume_backlog().await?;
        let mut first = None;
        let mut seen = 0;
        while seen < n {
            let delivery = next_delivery(&mut consumer, "broker-only").await?;
            first.get_or_insert_with(Instant::now);
            delivery.ack(BasicAckOptions::default()).await?;
            seen += 1;
        }
        let consume_secs = first.expect("n >= 1").elapsed().as_secs_f64();
        let cpu = before.delta(&CpuSnapshot::take(&self.db_name, &[]), "bench process (consumer)");
        let _ = channel.close(200, "done".into()).await;
        let r = RunResult {
            name: "broker-only".into(),
            messages: n,
            publish_secs,
            consume_secs,
            cpu,
            workers: 1,
            batch_size: None,
            applied: None,
        };
        self.say(format!("[broker-only] {:.0} msg/s", r.rate()));
        Ok(r)
    }

    async fn run_naive(&mut self, n: usize) -> anyhow::Result<RunResult> {
        self.say(format!("[naive] publishing {n}…"));
        let (_, bodies) = self.payloads(n);
        let publish_secs = self.publish_backlog(bodies).await?;
        self.say(format!("[naive] consuming {n}: one transaction and one ack per message…"));
        let registry = AdapterRegistry::with_defaults();
        let adapter = registry.get(ChannelType::Webhook, "webhook").expect("webhook adapter");
        let pool = store::connect(&self.db_url, 1).await?;
        let before = CpuSnapshot::take(&self.db_name, &[]);
        let (channel, mut consumer) = self.consume_backlog().await?;
        let mut entry_points: HashMap<String, store::ResolvedEntryPoint> = HashMap::new();
        let mut first = None;
        let mut seen = 0;
        while seen < n {
            let delivery = next_delivery(&mut consumer, "naive").await?;
            first.get_or_insert_with(Instant::now);
            let headers = Headers::new();
            let updates = adapter
                .decode(&AdapterDelivery {
                    body: &delivery.data,
                    headers: &headers,
                    external_channel_id: None,
                    received_at: chrono::Utc::now(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("naive: decode: {e}"))?;
            for mut u in updates {
                let external = u.channel_id_candidates(None).first().map(|s| (*s).to_owned()).unwrap_or_default();
                let ep = match entry_points.get(&external) {
                    Some(ep) => ep.clone(),
                    None => {
                        let ep = store::resolve_entry_point(&pool, ChannelType::Webhook, &external, None).await?;
                        entry_points.insert(external, ep.clone());
                        ep
                    }
                };
                adapter.refine(
                    &mut u,
                    &EntryPointInfo {
                        external_channel_id: &ep.external_channel_id,
                        adapter_key: &ep.adapter_key,
                        metadata: &ep.metadata,
                    },
                );
                let request = UpdateRequest {
                    project_id: ep.project_id.clone(),
                    target: Target::Channel { entry_point_id: ep.id, thread: u.thread },
                    action: Some(u.action),
                    extras: MessageExtras::default(),
                    attributes: Default::default(),
                };
                update::apply(&pool, &request).await?;
            }
            delivery.ack(BasicAckOptions::default()).await?;
            seen += 1;
        }
        let consume_secs = first.expect("n >= 1").elapsed().as_secs_f64();
        let cpu = before.delta(&CpuSnapshot::take(&self.db_name, &[]), "bench process (consumer)");
        let _ = channel.close(200, "done".into()).await;
        pool.close().await;
        self.expected_rows += n as i64;
        let rows = self.rows().await?;
        anyhow::ensure!(rows == self.expected_rows, "naive: {rows} rows, expected {}", self.expected_rows);
        let r = RunResult {
            name: "naive (tx+ack per msg)".into(),
            messages: n,
            publish_secs,
            consume_secs,
            cpu,
            workers: 1,
            batch_size: Some(1),
            applied: Some(n as i64),
        };
        self.say(format!("[naive] {:.0} msg/s", r.rate()));
        Ok(r)
    }

    fn spawn_worker(&self, batch_size: Option<usize>) -> anyhow::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker");
        for var in [
            "INTAKE_PREFETCH",
            "INTAKE_BATCH_SIZE",
            "INTAKE_BATCH_WAIT",
            "INTAKE_WORKER_QUEUES",
            "INTAKE_WITH_API",
            "INTAKE_QUEUE_TYPE",
            "INTAKE_RETRY_DELAYS",
            "INTAKE_DB_MAX_CONNECTIONS",
            "INTAKE_ATTACHMENT_DIR",
            "INTAKE_SMTP_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DATABASE_URL", &self.db_url)
            .env("AMQP_URL", &self.args.amqp_url)
            .env("INTAKE_EXCHANGE", &self.topology.exchange)
            .env("INTAKE_QUEUE_PREFIX", &self.topology.queue_prefix)
            .env("INTAKE_DEAD_QUEUE", &self.topology.dead_queue)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.worker_log()?)
            .kill_on_drop(true);
        if let Some(b) = batch_size {
            cmd.env("INTAKE_BATCH_SIZE", b.to_string());
            if b > usize::from(DEFAULT_PREFETCH) {
                cmd.env("INTAKE_PREFETCH", b.min(u16::MAX as usize).to_string());
            }
        }
        Ok(cmd.spawn()?)
    }

    /// The workers' stderr (warnings and errors; RUST_LOG=warn) goes to a file, named when a
    /// run fails or with --keep, removed at the end otherwise.
    fn worker_log_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("intake_bench_{}_workers.log", self.id))
    }

    fn worker_log(&self) -> anyhow::Result<Stdio> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(self.worker_log_path())?;
        Ok(file.into())
    }

    async fn run_workers(
        &mut self,
        name: &str,
        n: usize,
        workers: usize,
        batch_size: Option<usize>,
    ) -> anyhow::Result<RunResult> {
        self.say(format!("[{name}] publishing {n}…"));
        let (_, bodies) = self.payloads(n);
        let publish_secs = self.publish_backlog(bodies).await?;
        self.say(format!("[{name}] draining {n} with {workers} `intake worker` process(es)…"));
        let before = CpuSnapshot::take(&self.db_name, &[]);
        let mut children = Vec::new();
        for _ in 0..workers {
            children.push(self.spawn_worker(batch_size)?);
        }
        let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
        let queue = self.queue();
        let target = self.expected_rows + n as i64;
        // The clock starts at the first delivery: the queue depth drops below the backlog.
        let spawn = Instant::now();
        let first = loop {
            let (ready, _) = self.queue_state(&queue).await?;
            if (ready as usize) < n {
                break Instant::now();
            }
            for c in &mut children {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!("[{name}] worker exited early: {status}");
                }
            }
            anyhow::ensure!(spawn.elapsed() < Duration::from_secs(60), "[{name}] workers did not start consuming");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut last_progress = (self.rows().await?, Instant::now());
        let done = loop {
            let (ready, _) = self.queue_state(&queue).await?;
            if ready == 0 {
                let rows = self.rows().await?;
                if rows >= target {
                    break Instant::now();
                }
                if rows != last_progress.0 {
                    last_progress = (rows, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(25)).await;
                if last_progress.1.elapsed() > Duration::from_secs(10) {
                    let rows = self.rows().await?;
                    anyhow::ensure!(
                        rows != last_progress.0,
                        "[{name}] no progress for 10 s ({rows} rows, {ready} ready)"
                    );
                    last_progress = (rows, Instant::now());
                }
            }
            for c in &mut children {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!("[{name}] worker exited early: {status}");
                }
            }
        };
        let consume_secs = done.duration_since(first).as_secs_f64();
        let cpu = before.delta(&CpuSnapshot::take(&self.db_name, &pids), "bench process (poller)");
        stop_workers(children).await?;
        self.expected_rows = target;
        let rows = self.rows().await?;
        anyhow::ensure!(rows == target, "[{name}] {rows} rows, expected {target}");
        let dead = self.queue_state(&self.topology.dead_queue).await?.0;
        anyhow::ensure!(dead == 0, "[{name}] {dead} message(s) dead-lettered");
        let r = RunResult {
            name: name.to_owned(),
            messages: n,
            publish_secs,
            consume_secs,
            cpu,
            workers,
            batch_size: Some(batch_size.unwrap_or(DEFAULT_BATCH)),
            applied: Some(n as i64),
        };
        self.say(format!("[{name}] {:.0} msg/s", r.rate()));
        Ok(r)
    }

    async fn run_latency(&mut self, rate: f64) -> anyhow::Result<LatencyResult> {
        let rate = rate.max(1.0);
        let count = ((rate * self.args.latency_secs as f64) as usize).max(1);
        self.say(format!("[latency] {count} messages paced at {rate:.0} msg/s through one default worker…"));
        let (run, bodies) = self.payloads(count);
        sqlx::query(&format!(
            "CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', regexp_replace(NEW.idempotency_key, '^webhook:[^:]*:', ''));
             RETURN NULL; END $$"
        ))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "CREATE TRIGGER bench_notify AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION bench_notify()",
        )
        .execute(&self.pool)
        .await?;
        let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let prefix = format!("r{run}-");
        let listening = {
            let committed = committed.clone();
            tokio::spawn(async move {
                while let Ok(n) = listener.recv().await {
                    let at = Instant::now();
                    if n.payload().starts_with(&prefix) {
                        committed.lock().expect("lock").insert(n.payload().to_owned(), at);
                    }
                }
            })
        };
        let child = self.spawn_worker(None)?;
        let spawn = Instant::now();
        while self.queue_state(&self.queue()).await?.1 == 0 {
            anyhow::ensure!(spawn.elapsed() < Duration::from_secs(60), "[latency] worker did not start consuming");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Paced publishing; confirms are checked by a separate task so they do not hold the pace.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<lapin::PublisherConfirm>();
        let confirms = tokio::spawn(async move {
            let mut bad = 0usize;
            while let Some(c) = rx.recv().await {
                match c.await {
                    Ok(c) if c.is_ack() => {
                        if c.take_message().is_some() {
                            bad += 1;
                        }
                    }
                    _ => bad += 1,
                }
            }
            bad
        });
        let mut published: Vec<(String, Instant)> = Vec::with_capacity(count);
        let started = Instant::now();
        let channel = self.publisher.channel();
        for (i, body) in bodies.into_iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let props = new_message_properties(
                &format!("bench-{}-{i}", self.id),
                "application/json",
                [(envelope::ADAPTER, "webhook".to_owned())],
            );
            published.push((format!("r{run}-{i:06}"), Instant::now()));
            let confirm = channel
                .basic_publish(
                    self.topology.exchange.as_str().into(),
                    ROUTING_KEY.into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    props.with_delivery_mode(2),
                )
                .await?;
            let _ = tx.send(confirm);
        }
        let publish_secs = started.elapsed().as_secs_f64();
        drop(tx);
        let bad = confirms.await?;
        anyhow::ensure!(bad == 0, "[latency] {bad} publish(es) not confirmed");
        let target = self.expected_rows + count as i64;
        let wait = Instant::now();
        while committed.lock().expect("lock").len() < count {
            anyhow::ensure!(
                wait.elapsed() < Duration::from_secs(60),
                "[latency] only {} of {count} commits seen",
                committed.lock().expect("lock").len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_workers(vec![child]).await?;
        listening.abort();
        sqlx::query("DROP TRIGGER bench_notify ON messages").execute(&self.pool).await?;
        sqlx::query("DROP FUNCTION bench_notify()").execute(&self.pool).await?;
        self.expected_rows = target;
        let rows = self.rows().await?;
        anyhow::ensure!(rows == target, "[latency] {rows} rows, expected {target}");

        let committed = committed.lock().expect("lock");
        let mut latencies: Vec<f64> = published
            .iter()
            .filter_map(|(key, at)| committed.get(key).map(|c| c.duration_since(*at).as_secs_f64() * 1000.0))
            .collect();
        anyhow::ensure!(latencies.len() == count, "[latency] {} of {count} keys matched", latencies.len());
        latencies.sort_by(f64::total_cmp);
        let r = LatencyResult {
            target_rate: rate,
            achieved_rate: count as f64 / publish_secs.max(1e-9),
            messages: count,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: *latencies.last().expect("count >= 1"),
        };
        self.say(format!("[latency] p50 {:.1} ms, p99 {:.1} ms", r.p50_ms, r.p99_ms));
        Ok(r)
    }

    /// Every run's messages are in the database once; nothing was dead-lettered or left.
    async fn final_check(&self) -> anyhow::Result<(i64, i64)> {
        let (total, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT (project_id, idempotency_key)) FROM messages")
                .fetch_one(&self.pool)
                .await?;
        anyhow::ensure!(total == self.expected_rows, "{total} rows, expected {}", self.expected_rows);
        anyhow::ensure!(distinct == total, "{total} rows but {distinct} distinct keys");
        let per_conversation: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM conversations c
              WHERE c.last_message_at IS DISTINCT FROM (SELECT max(occurred_at) FROM messages m WHERE m.conversation_id = c.id)",
        )
        .fetch_one(&self.pool)
        .await?;
        anyhow::ensure!(per_conversation == 0, "{per_conversation} conversation(s) behind their newest message");
        for q in [self.queue(), self.topology.dead_queue.clone()] {
            let depth = self.queue_state(&q).await?.0;
            anyhow::ensure!(depth == 0, "queue `{q}` still holds {depth} message(s)");
        }
        Ok((total, distinct))
    }

    async fn cleanup(&mut self) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        for q in self.topology.all_queues() {
            let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = channel.exchange_delete(self.topology.exchange.as_str().into(), Default::default()).await;
        let _ = self.connection.close(200, "bench done".into()).await;
        self.pool.close().await;
        if self.args.keep {
            eprintln!("kept database {} ({})", self.db_name, self.db_url);
            return Ok(());
        }
        let admin = PgConnectOptions::from_str(&self.db_url)?
            .database("postgres")
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(60));
        let mut conn = admin.connect().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name)).execute(&mut conn).await?;
        Ok(())
    }
}

/// SIGTERM, then wait for a clean exit (the worker finishes and acks its batch).
async fn stop_workers(children: Vec<Child>) -> anyhow::Result<()> {
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for mut c in children {
        match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success() || status.code().is_none(), "worker exited with {status}");
            }
            Err(_) => {
                let _ = c.kill().await;
                anyhow::bail!("worker did not stop within 30 s of SIGTERM");
            }
        }
    }
    Ok(())
}

fn print_run(r: &RunResult) {
    let cpu = r.cpu.iter().filter(|(_, v)| *v > 0.0).map(|(k, v)| format!("{k} {v:.2}")).collect::<Vec<_>>().join(", ");
    println!("{:<22} {:>8} {:>12.0} {:>12.0}  {cpu}", r.name, r.messages, r.publish_rate(), r.rate());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn entry_point_name(n: usize) -> String {
    format!("bench-shop-{n:02}")
}

/// Replace the database of a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

const WORDS: &[&str] = &[
    "order",
    "delivery",
    "parcel",
    "refund",
    "invoice",
    "address",
    "tracking",
    "courier",
    "warehouse",
    "payment",
    "account",
    "discount",
    "exchange",
    "size",
    "colour",
    "damaged",
    "missing",
    "late",
    "update",
    "thanks",
    "please",
    "could",
    "you",
    "check",
    "when",
    "will",
    "arrive",
    "the",
    "my",
    "and",
    "still",
    "not",
    "yet",
    "again",
    "today",
];

/// A realistic ~1 KB generic-webhook message: run `run`, message `i`.
fn payload(run: usize, i: usize, conversations: usize, entry_points: usize) -> Vec<u8> {
    let conv = i % conversations;
    let nth = i / conversations;
    let outbound = nth % 3 == 2;
    let mut seed =
        (run as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut text = String::with_capacity(640);
    while text.len() < 560 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if !text.is_empty() {
            text.push(if seed.is_multiple_of(11) { '.' } else { ' ' });
            if seed.is_multiple_of(11) {
                text.push(' ');
            }
        }
        text.push_str(WORDS[(seed % WORDS.len() as u64) as usize]);
    }
    let occurred = chrono::DateTime::<chrono::Utc>::from_timestamp(1_700_000_000 + (run * 1_000_000 + i) as i64, 0)
        .expect("valid time")
        .to_rfc3339();
    let sender = if outbound {
        json!({"id": format!("agent-{}", conv % 7), "displayName": format!("Agent {}", conv % 7)})
    } else {
        json!({
            "id": format!("cust-{run}-{conv}"),
            "displayName": format!("Customer {conv}"),
            "primaryEmail": format!("customer{conv}@example.com"),
            "profileImageUrl": format!("https://cdn.example.com/avatars/{conv}.png"),
        })
    };
    serde_json::to_vec(&json!({
        "id": format!("r{run}-{i:06}"),
        "conversationKey": format!("r{run}-c{conv:04}"),
        "externalChannelId": entry_point_name(conv % entry_points),
        "direction": if outbound { "outbound" } else { "inbound" },
        "subject": format!("Order #{} - where is my parcel?", 100_000 + conv),
        "body": text,
        "sender": sender,
        "occurredAt": occurred,
        "metadata": {"source": "shop", "orderId": 100_000 + conv, "locale": "en-GB", "priority": if conv.is_multiple_of(5) { "high" } else { "normal" }},
    }))
    .expect("serialize payload")
}

/// CPU seconds of the processes that take part, by group.
struct CpuSnapshot {
    procs: HashMap<u32, (String, f64)>,
    own: f64,
}

impl CpuSnapshot {
    fn take(db_name: &str, workers: &[u32]) -> Self {
        let mut procs = HashMap::new();
        let workers: HashSet<u32> = workers.iter().copied().collect();
        let own = std::process::id();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let group = if workers.contains(&pid) {
                    "intake worker(s)".to_owned()
                } else {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let comm = comm.trim();
                    if comm == "beam.smp" {
                        "rabbitmq beam.smp".to_owned()
                    } else if comm == "postgres" {
                        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        let cmdline = String::from_utf8_lossy(&cmdline);
                        if cmdline.contains(db_name) {
                            "postgres backends".to_owned()
                        } else if ["walwriter", "checkpointer", "background writer"].iter().any(|p| cmdline.contains(p))
                        {
                            "postgres wal/bg writers".to_owned()
                        } else {
                            continue;
                        }
                    } else {
                        continue;
                    }
                };
                if let Some(secs) = cpu_secs(pid) {
                    procs.insert(pid, (group, secs));
                }
            }
        }
        CpuSnapshot { procs, own: cpu_secs(own).unwrap_or(0.0) }
    }

    /// CPU seconds per group between `self` and `later` (processes that started in between
    /// count from zero).
    fn delta(&self, later: &CpuSnapshot, own_label: &str) -> Vec<(String, f64)> {
        let mut groups: Vec<(String, f64)> = Vec::new();
        let mut add = |g: &str, v: f64| match groups.iter_mut().find(|(k, _)| k == g) {
            Some((_, total)) => *total += v,
            None => groups.push((g.to_owned(), v)),
        };
        for order in ["intake worker(s)", "postgres backends", "postgres wal/bg writers", "rabbitmq beam.smp"] {
            add(order, 0.0);
        }
        add(own_label, (later.own - self.own).max(0.0));
        for (pid, (group, secs)) in &later.procs {
            let before = self.procs.get(pid).map(|(_, s)| *s).unwrap_or(0.0);
            add(group, (secs - before).max(0.0));
        }
        groups
    }
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// The next delivery of an in-process baseline consumer; a run that stalls fails after 60 s.
async fn next_delivery(consumer: &mut lapin::Consumer, run: &str) -> anyhow::Result<lapin::message::Delivery> {
    tokio::time::timeout(Duration::from_secs(60), consumer.next())
        .await
        .map_err(|_| anyhow::anyhow!("{run}: no delivery for 60 s"))?
        .ok_or_else(|| anyhow::anyhow!("{run}: consumer cancelled"))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_in_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/intake", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(with_database("postgres://u@h:1", "b"), "postgres://u@h:1/b");
        assert_eq!(with_database("postgres://u@h/x?sslmode=disable", "b"), "postgres://u@h/b?sslmode=disable");
    }

    #[test]
    fn payloads_are_about_a_kilobyte_and_decode() {
        let body = payload(3, 1234, 500, 20);
        assert!((800..1300).contains(&body.len()), "{} bytes", body.len());
        let updates = intake_adapters::webhook::decode_generic(&body, chrono::Utc::now()).expect("decodes");
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].external_channel_id.as_deref(), Some("bench-shop-14"));
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(cpu_secs(std::process::id()).is_some());
    }
}
