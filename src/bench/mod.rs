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

mod baselines;
mod cpu;
mod latency;
mod payloads;
mod workers;

use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Args;
use intake_adapters::ChannelType;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};

use crate::amqp::envelope;
use crate::amqp::publish::{new_message_properties, ConfirmedPublisher};
use crate::amqp::topology::Topology;
use crate::config::DEFAULT_AMQP_URL;
use crate::store;
use cpu::CpuUsage;
use payloads::{entry_point_name, payload};

const PROJECT: &str = "bench";
const ROUTING_KEY: &str = "webhook.webhook";
/// Worker defaults (see `intake worker --help`); the naive and broker-only consumers use the
/// same prefetch.
const DEFAULT_PREFETCH: u16 = 200;
const DEFAULT_BATCH: usize = 100;

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
    cpu: CpuUsage,
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

fn print_run(r: &RunResult) {
    let cpu = r.cpu.iter().filter(|(_, v)| *v > 0.0).map(|(k, v)| format!("{k} {v:.2}")).collect::<Vec<_>>().join(", ");
    println!("{:<22} {:>8} {:>12.0} {:>12.0}  {cpu}", r.name, r.messages, r.publish_rate(), r.rate());
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
}
