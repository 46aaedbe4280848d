//! Ingestion health: what the ops console's overview and the health gauges show.
//!
//! One [`Overview`] is sampled from RabbitMQ (queue depths, consumers, rates, oldest message),
//! the dead queue (counts by reason and adapter), and PostgreSQL (parked updates, last successful
//! ingest per entry point, worker instances' heartbeats). The console renders it; the sampler
//! exports the same numbers as Prometheus gauges ([`gauges`]).
//!
//! - [`rabbit`]: queue statistics, from the management HTTP API when it answers, else from AMQP;
//! - [`dead`]: dead letters counted by reason and adapter (a capped scan that acks nothing);
//! - [`postgres`]: parked updates, last ingest per entry point, live worker instances;
//! - [`heartbeat`]: each worker's in-memory tally and the task that writes it every few seconds.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use intake_adapters::ChannelType;
use serde::Serialize;

pub mod dead;
pub mod gauges;
pub mod heartbeat;
pub mod postgres;
pub mod rabbit;

/// Everything the overview shows, sampled at `sampled_at`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    pub sampled_at: Option<DateTime<Utc>>,
    /// The channel queues and the outbound email queue.
    pub queues: Vec<QueueStats>,
    /// The retry (delay) queues: name and messages waiting.
    pub retry_queues: Vec<QueueStats>,
    /// The dead queue itself.
    pub dead_queue: Option<QueueStats>,
    /// Dead letters counted by reason and adapter (from a scan of at most `dead_scanned`).
    pub dead_letters: Vec<DeadLetterCount>,
    /// How many dead letters the counts above looked at (the scan is capped).
    pub dead_scanned: u64,
    /// Parked updates waiting for their message.
    pub parked: i64,
    pub last_ingest: Vec<EntryPointIngest>,
    pub workers: Vec<WorkerInstance>,
    /// Parts that could not be sampled, with why (e.g. the management API is unreachable).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub name: String,
    pub ready: u64,
    /// None when only AMQP is available (the management API reports it).
    pub unacked: Option<u64>,
    pub consumers: u64,
    /// Messages per second published into / delivered out of the queue, when known.
    pub publish_rate: Option<f64>,
    pub deliver_rate: Option<f64>,
    /// Age in seconds of the oldest ready message (lag), when known.
    pub oldest_age_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterCount {
    pub reason: String,
    pub adapter: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryPointIngest {
    pub entry_point_id: uuid::Uuid,
    pub project_id: String,
    pub channel_type: String,
    pub external_channel_id: String,
    pub last_ingest_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkerInstance {
    pub instance: String,
    pub host: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub batches: i64,
    pub messages: i64,
    pub dead_lettered: i64,
    pub avg_batch_size: f64,
    pub avg_batch_ms: f64,
}

/// Dead letters a sample looks at, at most.
pub const DEFAULT_DEAD_SCAN_LIMIT: usize = 5_000;

/// Samples taken closer together than this share one (the console and the gauges may ask at
/// once; each sample scans the dead queue).
const REUSE_SAMPLE_FOR: Duration = Duration::from_secs(1);

/// The dead queue is scanned again after this long even when its depth did not change.
const DEAD_RESCAN_AFTER: Duration = Duration::from_secs(300);

/// The RabbitMQ parts of a sample give up after this long.
const PART_TIMEOUT: Duration = Duration::from_secs(20);

/// Samples an [`Overview`]. One per process; the console and the gauges share it.
pub struct Sampler {
    pool: sqlx::PgPool,
    amqp_url: String,
    topology: crate::amqp::topology::Topology,
    management: Option<rabbit::Management>,
    management_problem: Option<String>,
    dead_scan_limit: usize,
    broker: rabbit::BrokerConnection,
    /// The last sample; the lock also keeps two samples (two dead-queue scans) from overlapping.
    last: tokio::sync::Mutex<Option<(Instant, Overview)>>,
    /// The last scan of the dead queue: the depth it saw, when, and the counts.
    dead_cache: tokio::sync::Mutex<Option<(u64, Instant, dead::DeadCounts)>>,
}

impl Sampler {
    /// The management API is `INTAKE_RABBITMQ_MANAGEMENT_URL` when set, else
    /// `http://<AMQP host>:15672` with the AMQP URL's credentials and vhost
    /// ([`Sampler::with_management_url`] overrides both).
    pub fn new(pool: sqlx::PgPool, amqp_url: String, topology: crate::amqp::topology::Topology) -> Self {
        let from_env = std::env::var(rabbit::MANAGEMENT_URL_ENV).ok().filter(|u| !u.trim().is_empty());
        let (management, management_problem) = match rabbit::Management::new(&amqp_url, from_env.as_deref()) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        Sampler {
            broker: rabbit::BrokerConnection::new(&amqp_url),
            pool,
            amqp_url,
            topology,
            management,
            management_problem,
            dead_scan_limit: DEFAULT_DEAD_SCAN_LIMIT,
            last: tokio::sync::Mutex::new(None),
            dead_cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Use this management API URL (e.g. `http://rabbit:15672`; credentials in the URL, else
    /// the AMQP URL's). `None` keeps the default.
    pub fn with_management_url(mut self, url: Option<&str>) -> Self {
        if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
            match rabbit::Management::new(&self.amqp_url, Some(url)) {
                Ok(m) => (self.management, self.management_problem) = (Some(m), None),
                Err(e) => (self.management, self.management_problem) = (None, Some(e)),
            }
        }
        self
    }

    /// Look at no more than `limit` dead letters per sample (default [`DEFAULT_DEAD_SCAN_LIMIT`]).
    pub fn with_dead_scan_limit(mut self, limit: usize) -> Self {
        self.dead_scan_limit = limit;
        self
    }

    /// The management API base URL this sampler asks, if any (without credentials).
    pub fn management_url(&self) -> Option<&str> {
        self.management.as_ref().map(|m| m.base_url())
    }

    /// Close the sampler's AMQP connection (at shutdown).
    pub async fn close(&self) {
        self.broker.close().await;
    }

    /// Dead letters by reason. The scan holds what it reads for a moment (a `dlq` command
    /// running then sees fewer), so it runs only when the dead queue's depth changed, or the
    /// last one is older than [`DEAD_RESCAN_AFTER`].
    async fn dead_counts(&self, ready: Option<u64>) -> anyhow::Result<dead::DeadCounts> {
        let mut cache = self.dead_cache.lock().await;
        if let (Some(ready), Some((depth, at, counts))) = (ready, cache.as_ref()) {
            if *depth == ready && at.elapsed() < DEAD_RESCAN_AFTER {
                return Ok(counts.clone());
            }
        }
        let counts = if ready == Some(0) {
            dead::DeadCounts::default()
        } else {
            tokio::time::timeout(
                PART_TIMEOUT,
                dead::count_dead_letters(&self.broker, &self.topology.dead_queue, self.dead_scan_limit),
            )
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in time")))?
        };
        if let Some(ready) = ready {
            *cache = Some((ready, Instant::now(), counts.clone()));
        }
        Ok(counts)
    }

    /// Sample now. Never fails: a part that cannot be read is left empty with a warning.
    pub async fn sample(&self) -> Overview {
        let mut last = self.last.lock().await;
        if let Some((at, overview)) = last.as_ref() {
            if at.elapsed() < REUSE_SAMPLE_FOR {
                return overview.clone();
            }
        }
        let overview = self.sample_now().await;
        *last = Some((Instant::now(), overview.clone()));
        overview
    }

    async fn sample_now(&self) -> Overview {
        let mut overview = Overview { sampled_at: Some(Utc::now()), ..Default::default() };
        let names = QueueNames::of(&self.topology);
        let all = names.all();
        let rabbit = async {
            // A broker that stops answering must not stop the sampling (or the console) for good.
            let queues =
                tokio::time::timeout(PART_TIMEOUT, rabbit::queue_stats(self.management.as_ref(), &self.broker, &all))
                    .await
                    .unwrap_or_else(|_| (Default::default(), vec!["RabbitMQ queues: no answer in time".into()]));
            let dead_ready = queues.0.get(&self.topology.dead_queue).map(|q| q.ready);
            (queues, self.dead_counts(dead_ready).await)
        };
        let ((queues, dead), db) = tokio::join!(rabbit, postgres::sample(&self.pool));
        let mut warnings = Vec::new();
        if let Some(problem) = &self.management_problem {
            warnings.push(format!("RabbitMQ management API: {problem}"));
        }
        let (mut stats, queue_warnings) = queues;
        warnings.extend(queue_warnings);
        let mut take = |name: &str| stats.remove(name);
        overview.queues = names.main.iter().filter_map(|n| take(n.as_str())).collect();
        overview.retry_queues = names.retry.iter().filter_map(|n| take(n.as_str())).collect();
        overview.dead_queue = take(names.dead.as_str());
        match dead {
            Ok(counts) => {
                overview.dead_letters = counts.counts;
                overview.dead_scanned = counts.scanned;
                if counts.capped {
                    warnings.push(format!(
                        "the dead queue holds more than {} messages: counts by reason cover the first {}",
                        self.dead_scan_limit, counts.scanned
                    ));
                }
            }
            Err(e) => warnings.push(format!("dead letters not counted: {e:#}")),
        }
        overview.parked = db.parked;
        overview.last_ingest = db.last_ingest;
        overview.workers = db.workers;
        warnings.extend(db.warnings);
        overview.warnings = warnings;
        overview
    }
}

/// The queues an overview reports, by role.
struct QueueNames {
    main: Vec<String>,
    retry: Vec<String>,
    dead: String,
}

impl QueueNames {
    fn of(topology: &crate::amqp::topology::Topology) -> Self {
        let mut main: Vec<String> = ChannelType::ALL.iter().map(|t| topology.queue(*t)).collect();
        main.push(topology.outbound_email_queue());
        let retry = main
            .iter()
            .flat_map(|q| (0..topology.retry_delays.len()).filter_map(|n| topology.retry_queue(q, n)))
            .collect();
        QueueNames { main, retry, dead: topology.dead_queue.clone() }
    }

    fn all(&self) -> Vec<String> {
        self.main.iter().chain(&self.retry).chain(std::iter::once(&self.dead)).cloned().collect()
    }
}

/// Settings of the health sampling (`serve`, `worker --with-api`).
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// RabbitMQ management HTTP API (queue unacked counts, rates, oldest message age).
    /// Default: `http://<AMQP host>:15672` with the AMQP URL's credentials; when it does not
    /// answer, queue depths come from AMQP and the rest is missing.
    #[arg(long = "rabbitmq-management-url", env = "INTAKE_RABBITMQ_MANAGEMENT_URL", hide_env_values = true)]
    pub management_url: Option<String>,

    /// How often the health gauges on `/metrics` are sampled (queues, dead letters, parked
    /// updates, last ingest per entry point, live workers).
    #[arg(long, env = "INTAKE_HEALTH_SAMPLE_EVERY", default_value = "15s", value_parser = crate::amqp::parse_duration)]
    pub health_sample_every: Duration,
}

impl HealthArgs {
    pub fn sampler(&self, pool: sqlx::PgPool, amqp: &crate::amqp::AmqpArgs) -> Sampler {
        Sampler::new(pool, amqp.amqp_url.clone(), crate::amqp::topology::Topology::from(amqp))
            .with_management_url(self.management_url.as_deref())
    }
}

/// The health gauges' sampling loop of a process, stopped with [`GaugeLoop::stop`].
pub struct GaugeLoop {
    sampler: std::sync::Arc<Sampler>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl GaugeLoop {
    pub fn start(sampler: std::sync::Arc<Sampler>, every: Duration) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(gauges::run(sampler.clone(), every, stop.clone()));
        GaugeLoop { sampler, stop, task }
    }

    /// Finish the sample in hand and close the sampler's broker connection.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.sampler.close().await;
    }
}
