//! `intake bench`: throughput, CPU per message, latency and bytes on disk of the worker against
//! the local RabbitMQ and PostgreSQL, next to the baselines that bound it, and scenarios of
//! harder traffic, all in one invocation and against the same fast baseline.
//!
//! Everything runs on names of its own (exchange and queues `bench_<id>.*`, database
//! `intake_bench_<id>`) that are removed at the end (the database is kept with `--keep`):
//!
//! 1. **broker only** ([`baselines`]): N persistent ~1 KB webhook messages published
//!    (confirmed), then drained by a consumer that only acks, prefetch as the worker's: with
//!    `multiple` once per batch as intake acks (the fast baseline, the broker's limit for a
//!    consumer like intake), and each delivery on its own;
//! 2. **store only** ([`store_only`]): the broker and PostgreSQL without intake's logic: one
//!    INSERT per batch into a table shaped like the core of `messages`, commit, ack;
//! 3. **naive** ([`baselines`]): one transaction through [`crate::update::apply`] and one ack
//!    per message;
//! 4. **intake** ([`workers`]): the real `intake worker` binary (this executable) with default
//!    settings as child processes, 1 and 2 of them; sweeps over worker counts and batch sizes
//!    with `--sweep`;
//! 5. **latency** ([`latency`]): a paced run at a share of the measured rate, publish → commit;
//! 6. **scenarios** ([`scenarios`]): real-size traffic of every channel ([`payloads`]), one hot
//!    conversation, and with `--big-table N` a table already holding N messages ([`fill`]);
//! 7. **disk** ([`disk`]) and the exactly-once **check** ([`check`]).
//!
//! Throughput runs drain a pre-published backlog, timed from the first delivery until all rows
//! are visible (the last ack for broker-only); CPU comes from `/proc/<pid>/stat` ([`cpu`]).

mod args;
mod baselines;
mod check;
mod compare;
mod cpu;
mod disk;
mod fill;
mod latency;
mod payloads;
mod report;
mod scenarios;
mod store_only;
mod workers;

use std::str::FromStr;
use std::time::{Duration, Instant};

use intake_adapters::ChannelType;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

use crate::amqp::envelope;
use crate::amqp::publish::{new_message_properties, ConfirmedPublisher};
use crate::amqp::topology::Topology;
use crate::store;
pub use args::{BenchArgs, Scenario, LONG_ABOUT};
use baselines::Ack;
use payloads::{entry_point_name, mix_entry_points, webhook_message, BenchMessage};
use report::{Report, RunResult};

const PROJECT: &str = "bench";
/// Worker defaults (see `intake worker --help`); the naive and broker-only consumers use the
/// same prefetch, and the fast baseline acks once per batch.
const DEFAULT_PREFETCH: u16 = crate::amqp::worker::DEFAULT_PREFETCH;
const DEFAULT_BATCH: usize = crate::amqp::worker::DEFAULT_BATCH_SIZE;

struct Bench {
    args: BenchArgs,
    /// The executable under test and its database: this one, or with `--compare-with` the
    /// other one while its runs go.
    subject: Subject,
    /// `--compare-with`: the other executable and its database, while this one's runs go.
    other: Option<Subject>,
    id: String,
    topology: Topology,
    connection: Connection,
    publisher: ConfirmedPublisher,
    channel: Channel,
    /// Rows the big-table fill stored.
    fill_rows: i64,
    next_run: usize,
    published: usize,
    /// The queues the last backlog went to: the ones polled while it drains (each poll is a
    /// queue.declare the broker answers, so unused queues are left alone).
    polled: Vec<String>,
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
    anyhow::ensure!(args.mix_messages != Some(0), "--mix-messages must be at least 1");
    anyhow::ensure!(args.slow_messages != Some(0), "--slow-messages must be at least 1");
    let id = hex::encode(rand::random::<[u8; 4]>());
    let db_name = format!("intake_bench_{id}");
    let db_url = with_database(database_url, &db_name);
    let mut topology = Topology::with_prefix(&format!("bench_{id}"));
    // The worker declares the default retry queues; declare (and delete) the same.
    topology.retry_delays = ["1s", "5s", "30s", "2m", "10m"]
        .iter()
        .map(|d| crate::amqp::parse_duration(d).expect("static duration"))
        .collect();

    store::connect_and_migrate(&db_url, 1).await?.close().await;
    let subject = Subject {
        exe: std::env::current_exe()?,
        pool: bench_pool(&db_url).await?,
        db_url,
        db_name,
        webhook_entry_points: Vec::new(),
        expected_rows: 0,
    };
    let connection = crate::amqp::connect(&args.amqp_url, "intake-bench").await?;
    let publisher = ConfirmedPublisher::open(&connection).await?;
    topology.declare(publisher.channel()).await?;
    let channel = connection.create_channel().await?;
    let log = !args.json;
    let mut bench = Bench {
        args,
        subject,
        other: None,
        id,
        topology,
        connection,
        publisher,
        channel,
        fill_rows: 0,
        next_run: 0,
        published: 0,
        polled: Vec::new(),
        log,
    };
    let result = bench.run_all().await;
    let cleanup = bench.cleanup().await;
    let log = bench.worker_log_path();
    let report = match result {
        Ok(report) => report,
        Err(e) => return Err(e.context(format!("worker output is in {}", log.display()))),
    };
    if bench.args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
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

    /// The project, the webhook entry points, and those of the mix's channels.
    async fn register_entry_points(&mut self) -> anyhow::Result<()> {
        store::ensure_project(&self.subject.pool, PROJECT).await?;
        for ep in 0..self.args.entry_points {
            let name = entry_point_name(ep);
            let view = store::create_entry_point(
                &self.subject.pool,
                PROJECT,
                ChannelType::Webhook,
                "webhook",
                &name,
                serde_json::json!({}),
            )
            .await?;
            self.subject.webhook_entry_points.push((view.id, name));
        }
        if self.args.scenarios.contains(&Scenario::Mix) {
            for (channel_type, adapter_key, external) in mix_entry_points() {
                store::create_entry_point(
                    &self.subject.pool,
                    PROJECT,
                    channel_type,
                    adapter_key,
                    &external,
                    serde_json::json!({}),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn run_all(&mut self) -> anyhow::Result<Report> {
        let started = Instant::now();
        self.register_entry_points().await?;
        let mut compared = match self.args.compare_with.clone() {
            Some(exe) => {
                let subject = self.prepare_other(&exe).await?;
                self.say(format!("[compare] {} migrated {}", exe.display(), subject.db_name));
                self.other = Some(subject);
                let other_version = compare::version_of(&exe).await;
                Some(compare::Comparison { other: exe, other_version, pairs: Vec::new() })
            }
            None => None,
        };
        let n = self.args.messages;
        let slow = self.args.slow_messages.unwrap_or((n / 10).max(1));
        let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
        self.say(format!(
            "bench {}: {cores} cores, database {}, queues {}.*, {n} messages per run, {} conversations, {} entry points",
            self.id, self.subject.db_name, self.topology.queue_prefix, self.args.conversations, self.args.entry_points
        ));

        let fast = self.run_broker_only(n, Ack::Multiple).await?;
        let ack_each = self.run_broker_only(n, Ack::Each).await?;
        let store_only = self.run_store_only(n).await?;
        // The in-process naive consumer logs like a worker with RUST_LOG=warn (as the child
        // workers do), not one line per new conversation.
        let quiet = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .finish();
        let naive = tracing::instrument::WithSubscriber::with_subscriber(self.run_naive(slow), quiet).await?;
        let (intake, other) = self.spread_pair("intake", compare::INTAKE_1, n, 1, false).await?;
        let pair = other.map(|o| (intake.clone(), o));
        let (intake2, other) = self.spread_pair("intake2Workers", compare::INTAKE_2, n, 2, false).await?;
        let pair2 = other.map(|o| (intake2.clone(), o));
        if let Some(c) = &mut compared {
            c.pairs.extend(pair.into_iter().chain(pair2));
        }
        let latency = self.run_latency(intake.rate() * self.args.latency_load).await?;

        let mix = match self.args.scenarios.contains(&Scenario::Mix) {
            true => {
                let (mix, stats, other) =
                    self.mix_pair(self.args.mix_messages.unwrap_or((n / 4).max(1)), false).await?;
                if let Some(c) = &mut compared {
                    c.pairs.extend(other.map(|o| (mix.clone(), o)));
                }
                Some((mix, stats))
            }
            false => None,
        };
        if let Some(c) = &mut compared {
            let mix_n = mix.as_ref().map(|(r, _)| r.messages);
            c.pairs.extend(self.more_rounds(n, mix_n).await?);
        }
        let hot = match self.args.scenarios.contains(&Scenario::Hot) {
            true => Some(self.run_hot(n).await?),
            false => None,
        };
        let (mut sweep_workers, mut sweep_batches) = (Vec::new(), Vec::new());
        if self.args.sweep {
            for w in self.args.workers.clone() {
                sweep_workers.push(match w {
                    1 => intake.clone(),
                    2 => intake2.clone(),
                    w => self.run_spread("sweep", &format!("intake, {w} workers"), n, w, None).await?,
                });
            }
            for b in self.args.batch_sizes.clone() {
                sweep_batches.push(match b {
                    DEFAULT_BATCH => intake.clone(),
                    b => {
                        let count = if b == 1 { slow } else { n };
                        self.run_spread("sweep", &format!("intake, batch {b}"), count, 1, Some(b)).await?
                    }
                });
            }
        }
        self.say("[disk] VACUUM (ANALYZE) and sizes…");
        let disk = disk::measure(&self.subject.pool).await?;
        let mut check = self.final_check().await?;
        self.check_other().await?;
        let big = match self.args.big_table {
            0 => None,
            rows => Some(self.run_big_table(rows, n, &mut check).await?),
        };
        Ok(Report {
            id: self.id.clone(),
            database: self.subject.db_name.clone(),
            cores,
            messages: n,
            slow_messages: slow,
            webhook_bytes: intake.payload_bytes,
            conversations: self.args.conversations,
            entry_points: self.args.entry_points,
            fast,
            ack_each,
            store_only,
            naive,
            intake,
            intake2,
            latency,
            latency_load: self.args.latency_load,
            mix,
            hot,
            big,
            sweep_workers,
            sweep_batches,
            disk,
            check,
            compared,
            elapsed: started.elapsed().as_secs_f64(),
        })
    }

    /// `n` webhooks for a new run: keys `r<run>-<i>`, conversations `r<run>-c<n>` (`conversations`
    /// of them) over the entry points.
    fn webhook_backlog(&mut self, n: usize, conversations: usize) -> (usize, Vec<BenchMessage>) {
        let run = self.next_run;
        self.next_run += 1;
        (run, (0..n).map(|i| webhook_message(run, i, conversations, self.args.entry_points)).collect())
    }

    /// Publish a backlog with pipelined confirms; returns the seconds it took.
    async fn publish_backlog(&mut self, messages: Vec<BenchMessage>) -> anyhow::Result<f64> {
        let n = messages.len();
        let first = self.published;
        self.published += n;
        let mut types: Vec<ChannelType> = messages.iter().map(|m| m.kind.channel_type()).collect();
        types.sort_by_key(|t| t.as_str());
        types.dedup();
        self.polled = types.into_iter().map(|t| self.topology.queue(t)).collect();
        let started = Instant::now();
        let items = messages.into_iter().enumerate().map(|(i, m)| {
            let mut headers = vec![(envelope::ADAPTER, m.kind.adapter_key().to_owned())];
            if let Some(external) = m.external_channel_id.clone() {
                headers.push((envelope::EXTERNAL_CHANNEL_ID, external));
            }
            let props =
                new_message_properties(&format!("bench-{}-{}", self.id, first + i), m.kind.content_type(), headers);
            (m.routing_key().to_owned(), m.body, props)
        });
        self.publisher.publish_pipelined(&self.topology.exchange, items, 1000).await?;
        let secs = started.elapsed().as_secs_f64();
        let ready = self.ready().await?;
        anyhow::ensure!(ready as usize == n, "the queues hold {ready} messages after publishing {n}");
        Ok(secs)
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

    /// Messages ready in the queues the last backlog went to.
    async fn ready(&self) -> anyhow::Result<u32> {
        let mut ready = 0;
        for queue in &self.polled {
            ready += self.queue_state(queue).await?.0;
        }
        Ok(ready)
    }

    async fn rows(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&self.subject.pool).await?)
    }

    async fn cleanup(&mut self) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        for q in self.topology.all_queues() {
            let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = channel.exchange_delete(self.topology.exchange.as_str().into(), Default::default()).await;
        let _ = self.connection.close(200, "bench done".into()).await;
        self.subject.pool.close().await;
        let mut databases = vec![(self.subject.db_name.clone(), self.subject.db_url.clone())];
        if let Some(other) = self.other.take() {
            other.pool.close().await;
            databases.push((other.db_name, other.db_url));
        }
        if self.args.keep {
            for (name, url) in databases {
                eprintln!("kept database {name} ({url})");
            }
            return Ok(());
        }
        let admin = PgConnectOptions::from_str(&self.subject.db_url)?
            .database("postgres")
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(60));
        let mut conn = admin.connect().await?;
        for (name, _) in databases {
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
        }
        Ok(())
    }
}

/// The intake under test: the executable whose `intake worker` children drain a backlog and
/// the database they write to.
struct Subject {
    exe: std::path::PathBuf,
    db_url: String,
    db_name: String,
    pool: PgPool,
    /// The webhook entry points: (id, external channel id), in `entry_point_name` order.
    webhook_entry_points: Vec<(Uuid, String)>,
    /// Rows expected in `messages` from the runs (the fill not included).
    expected_rows: i64,
}

/// The bench's own pool on a subject's database. Its statements (the fill, VACUUM, counts over
/// big tables) may take seconds: not worth a warning each.
async fn bench_pool(db_url: &str) -> anyhow::Result<PgPool> {
    let options =
        store::connect_options(db_url)?.log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(60));
    Ok(sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_with(options).await?)
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
