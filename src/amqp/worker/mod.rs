//! The queue worker: consume, decode through the adapter, resolve the entry point, apply the
//! batch through the one update logic, and only then ack.
//!
//! Delivery guarantees:
//! - a delivery is acked only after its effect is committed, or after it was published (with
//!   confirm) to a retry queue or the dead queue; at-least-once delivery plus idempotency keys
//!   gives an exactly-once effect;
//! - transient failures (database unreachable) keep the batch unacked and retry it with
//!   backoff, so nothing is lost and nothing is dead-lettered because a dependency was down;
//! - permanent failures (bad payload, unknown entry point) go to the dead queue at once;
//! - a failing batch falls back to one delivery at a time, so one bad message cannot poison
//!   the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use intake_adapters::{AdapterRegistry, ChannelType};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::envelope;
use super::header_string;
use super::publish::ConfirmedPublisher;
use super::topology::Topology;
use crate::attachments::AttachmentStore;
use crate::health::heartbeat::Tally;
use crate::smtp::Mailer;
use crate::store::ResolvedEntryPoint;
use crate::update::{Effect, UpdateRequest};

mod batch;
mod outbound;
mod plan;
mod settle;

pub use batch::is_transient_db;
use batch::{apply_classified, plan_for_update_error, process_batch};
use outbound::process_outbound;
use plan::delivery_time;
use settle::settle_batch;

/// Most batches one consumer applies at once (each in its own transaction); the prefetch must
/// cover them (`prefetch / batch_size`, at least one).
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;

/// Unacked deliveries per inbound consumer by default: four batches, two being applied and two
/// arriving meanwhile, so the broker keeps delivering while the database works.
pub const DEFAULT_PREFETCH: u16 = 400;

/// Deliveries applied in one database transaction by default.
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// Tuning of the consumer.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub topology: Topology,
    /// Unacked deliveries the broker may push to one consumer (must be ≥ batch size).
    pub prefetch: u16,
    /// Deliveries applied in one database transaction.
    pub batch_size: usize,
    /// How long to wait for a batch to fill after its first delivery.
    pub batch_wait: Duration,
    /// Bodies above this size are dead-lettered unread.
    pub max_message_bytes: usize,
    /// Channel types to consume; all by default.
    pub channel_types: Vec<ChannelType>,
    /// How long a positive entry-point lookup is cached.
    pub entry_point_cache_ttl: Duration,
    /// Sends agent replies from the outbound email queue; `None`: that queue is not consumed.
    pub mailer: Option<Mailer>,
    /// Where attachment bytes kept by adapters are written; `None`: metadata only.
    pub attachment_store: Option<AttachmentStore>,
    /// Parked updates older than this are dropped by the sweeper.
    pub parked_max_age: Duration,
    /// How often this worker writes its tally (`worker_instances`, `entry_point_ingest`).
    pub heartbeat_every: Duration,
}

impl WorkerSettings {
    pub fn new(topology: Topology) -> Self {
        WorkerSettings {
            topology,
            prefetch: DEFAULT_PREFETCH,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_wait: Duration::from_millis(5),
            max_message_bytes: 25 * 1024 * 1024,
            channel_types: ChannelType::ALL.to_vec(),
            entry_point_cache_ttl: Duration::from_secs(30),
            mailer: None,
            attachment_store: None,
            parked_max_age: Duration::from_secs(7 * 86400),
            heartbeat_every: crate::health::heartbeat::DEFAULT_HEARTBEAT_EVERY,
        }
    }
}

/// What to do with one delivery.
#[derive(Debug)]
enum Plan {
    Apply(Vec<UpdateRequest>),
    /// Nothing to apply (an event the adapter ignores).
    Skip,
    /// Try again later through the retry queues.
    Retry {
        reason: &'static str,
        error: String,
    },
    /// Permanent failure.
    Dead {
        reason: &'static str,
        error: String,
    },
    /// Some updates of a delivery that carries several could not be planned (an entry point
    /// intake does not know, say): the others apply, then the whole delivery is dead-lettered
    /// with the reason, so one bad item holds back none of its siblings. A replay applies the
    /// applied ones again as duplicates.
    Partial {
        requests: Vec<UpdateRequest>,
        reason: &'static str,
        error: String,
    },
}

impl Plan {
    /// The updates to apply now.
    fn requests(&self) -> Option<&[UpdateRequest]> {
        match self {
            Plan::Apply(requests) | Plan::Partial { requests, .. } => Some(requests),
            _ => None,
        }
    }
}

/// A failure that goes away by itself (database or broker unreachable): keep the deliveries
/// unacked and try again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transient(String);

/// Positive entry-point lookups; unknown ones are never cached, so a newly registered entry
/// point is seen at once.
#[derive(Default)]
struct EntryPointCache {
    entries: Mutex<HashMap<EntryPointKey, (ResolvedEntryPoint, Instant)>>,
}

/// (channel type, external channel id, project from the envelope)
type EntryPointKey = (ChannelType, String, Option<String>);

/// Shared by all consumers of one worker process.
struct Shared {
    pool: PgPool,
    registry: AdapterRegistry,
    settings: WorkerSettings,
    cache: EntryPointCache,
    shutdown: CancellationToken,
    /// This process's counts, written by the heartbeat (never per message).
    tally: Arc<Tally>,
}

/// Run the worker until `shutdown` is cancelled: connect, declare the topology, consume every
/// queue; on any connection loss start over with backoff.
pub async fn run(
    pool: PgPool,
    registry: AdapterRegistry,
    amqp_url: String,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(settings.batch_size >= 1, "batch size must be at least 1");
    anyhow::ensure!(
        usize::from(settings.prefetch) >= settings.batch_size,
        "prefetch ({}) must be at least the batch size ({})",
        settings.prefetch,
        settings.batch_size
    );
    let tally = Arc::new(Tally::new());
    let shared = Arc::new(Shared {
        pool,
        registry,
        settings,
        cache: EntryPointCache::default(),
        shutdown,
        tally: tally.clone(),
    });
    let sweeper = tokio::spawn(sweep_parked_updates(shared.clone()));
    let search = tokio::spawn(crate::store::search::refresh_until(shared.pool.clone(), shared.shutdown.clone()));
    // The heartbeat outlives the consumers: its last write has the final batches' ingests.
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(crate::health::heartbeat::run(
        shared.pool.clone(),
        tally,
        shared.settings.heartbeat_every,
        heartbeat_stop.clone(),
    ));
    let result = consume_until_shutdown(&shared, &amqp_url).await;
    sweeper.abort();
    search.abort();
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    result
}

/// How often the worker looks at parked updates (applies what a race left, expires the old).
const PARKED_SWEEP_INTERVAL: Duration = Duration::from_secs(15);

async fn sweep_parked_updates(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PARKED_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        match crate::update::sweep_parked(&shared.pool, shared.settings.parked_max_age).await {
            Ok(report) if report.applied > 0 || report.expired > 0 => {
                tracing::info!(
                    applied = report.applied,
                    expired = report.expired,
                    waiting = report.waiting,
                    "parked updates swept"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping parked updates failed; trying again later"),
        }
    }
}

async fn consume_until_shutdown(shared: &Arc<Shared>, amqp_url: &str) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(250);
    loop {
        if shared.shutdown.is_cancelled() {
            return Ok(());
        }
        let started = Instant::now();
        match run_session(shared, amqp_url).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(250);
                }
                let wait = super::nodes::jittered(backoff);
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "worker session ended; reconnecting");
                metrics::counter!("intake_worker_reconnects_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// One connection's life. `Ok` means shutdown was requested and in-flight work is done.
async fn run_session(shared: &Arc<Shared>, amqp_url: &str) -> anyhow::Result<()> {
    let name = format!("intake-worker {}", shared.settings.topology.queue_prefix);
    let connection = super::connect(amqp_url, &name).await?;
    let setup = connection.create_channel().await?;
    shared.settings.topology.declare(&setup).await?;
    super::close_channel(&setup).await;

    let mut consumers = tokio::task::JoinSet::new();
    let topology = &shared.settings.topology;
    let mut queues: Vec<(String, QueueKind)> =
        shared.settings.channel_types.iter().map(|t| (topology.queue(*t), QueueKind::Inbound)).collect();
    if shared.settings.mailer.is_some() && shared.settings.channel_types.contains(&ChannelType::Email) {
        queues.push((topology.outbound_email_queue(), QueueKind::OutboundEmail));
    }
    for (queue, kind) in queues {
        let shared = shared.clone();
        let consume_channel = connection.create_channel().await?;
        let publisher = ConfirmedPublisher::open(&connection).await?;
        let span = tracing::info_span!("consumer", %queue);
        consumers.spawn(
            async move { consume_queue(shared, queue, kind, consume_channel, publisher).await }.instrument(span),
        );
    }
    tracing::info!(queues = ?shared.settings.channel_types, "worker consuming");
    // The first consumer to stop decides: an error ends the session for all of them.
    let mut result = Ok(());
    while let Some(joined) = consumers.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            result = Err(e);
            break;
        }
    }
    if result.is_err() {
        consumers.abort_all();
    }
    // Every consumer closed its channels (on success); the connection goes last.
    super::close_connection(&connection).await;
    result
}

/// What a consumed queue carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueKind {
    /// Channel payloads to decode and apply.
    Inbound,
    /// Agent replies to send over SMTP.
    OutboundEmail,
}

async fn consume_queue(
    shared: Arc<Shared>,
    queue: String,
    kind: QueueKind,
    channel: Channel,
    publisher: ConfirmedPublisher,
) -> anyhow::Result<()> {
    let settings = &shared.settings;
    // Up to `max_in_flight` batches are applied at once (each in its own transaction), so the
    // next batch is planned and applied while the previous one commits; acks still go out in
    // delivery order. The outbound queue sends one batch at a time, and a worker holds no more
    // mail than that: the other workers take the rest, and no held job ages towards the
    // consumer timeout.
    let (prefetch, max_in_flight) = match kind {
        QueueKind::Inbound => {
            (settings.prefetch, (usize::from(settings.prefetch) / settings.batch_size).clamp(1, MAX_BATCHES_IN_FLIGHT))
        }
        QueueKind::OutboundEmail => (settings.prefetch.min(u16::try_from(settings.batch_size).unwrap_or(u16::MAX)), 1),
    };
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let consumer_tag = consumer.tag();
    let publisher = Arc::new(publisher);
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut pending: Vec<Delivery> = Vec::with_capacity(settings.batch_size);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        let room = in_flight.len() < max_in_flight;
        if room && !pending.is_empty() && (pending.len() >= settings.batch_size || stopping) {
            let batch = std::mem::replace(&mut pending, Vec::with_capacity(settings.batch_size));
            deadline = None;
            in_flight.push_back(spawn_batch(&shared, &queue, kind, &publisher, batch));
            continue;
        }
        if stopping && in_flight.is_empty() {
            break;
        }
        let wait_until = deadline.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled(), if !stopping => {
                // Finish what is in hand (including a batch being filled), take nothing new.
                stopping = true;
            }
            Some(done) = in_flight.next() => {
                let (finished, last_tag) = done?;
                if !finished {
                    break; // shutdown while the database was down: leave this and later batches unacked
                }
                // Every earlier batch is acked already: this settles exactly this batch.
                channel.basic_ack(last_tag, BasicAckOptions { multiple: true }).await?;
            }
            _ = tokio::time::sleep_until(wait_until), if deadline.is_some() && room => {
                let batch = std::mem::replace(&mut pending, Vec::with_capacity(settings.batch_size));
                deadline = None;
                in_flight.push_back(spawn_batch(&shared, &queue, kind, &publisher, batch));
            }
            next = consumer.next(), if !stopping && pending.len() < settings.batch_size => {
                match next {
                    Some(d) => pending.push(d?),
                    None => anyhow::bail!("consumer on `{queue}` was cancelled by the broker"),
                }
                if pending.len() == 1 {
                    deadline = Some(tokio::time::Instant::now() + settings.batch_wait);
                }
            }
        }
    }
    // Graceful stop: no new deliveries; prefetched ones are requeued when the channel closes.
    // Both channels are closed here, before the session closes the connection. Batches left
    // after a failed one are aborted unacked.
    drop(in_flight);
    let _ = channel.basic_cancel(consumer_tag, BasicCancelOptions::default()).await;
    drop(consumer);
    super::close_channel(&channel).await;
    super::close_channel(publisher.channel()).await;
    tracing::info!(%queue, "consumer stopped");
    Ok(())
}

/// [`run_batch`] as a task of its own: a batch's planning (decoding, CPU only) runs on another
/// thread than the statements of the batch before it, which would otherwise wait for it to be
/// polled. Aborted when dropped.
fn spawn_batch(
    shared: &Arc<Shared>,
    queue: &str,
    kind: QueueKind,
    publisher: &Arc<ConfirmedPublisher>,
    batch: Vec<Delivery>,
) -> impl std::future::Future<Output = anyhow::Result<(bool, u64)>> {
    let (shared, queue, publisher) = (shared.clone(), queue.to_owned(), publisher.clone());
    let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        async move { run_batch(&shared, &queue, kind, &publisher, batch).await }.in_current_span(),
    ));
    async move { task.await.map_err(|e| anyhow::anyhow!("a batch's task failed: {e}"))? }
}

/// Apply one batch (without acking it); `(false, _)` means shutdown came while the work could
/// not be finished. Returns the batch's last delivery tag for the in-order ack.
async fn run_batch(
    shared: &Shared,
    queue: &str,
    kind: QueueKind,
    publisher: &ConfirmedPublisher,
    batch: Vec<Delivery>,
) -> anyhow::Result<(bool, u64)> {
    let last_tag = batch.last().expect("non-empty batch").delivery_tag;
    let (size, started) = (batch.len(), Instant::now());
    let finished = match kind {
        QueueKind::Inbound => process_batch(shared, queue, publisher, batch).await?,
        QueueKind::OutboundEmail => process_outbound(shared, queue, publisher, batch).await?,
    };
    if finished {
        shared.tally.record_batch(size, started.elapsed());
    }
    Ok((finished, last_tag))
}

/// Everything about a delivery the worker needs after planning.
struct Inflight {
    delivery: Delivery,
    /// The queue it was consumed from (its retries come back there).
    queue: String,
    adapter: String,
    attempt: u32,
    plan: Plan,
}

impl Inflight {
    fn new(delivery: Delivery, queue: &str) -> Self {
        let (adapter, _, attempt) = delivery_labels(&delivery);
        metrics::counter!("intake_messages_consumed_total", "adapter" => adapter.clone()).increment(1);
        Inflight { delivery, queue: queue.to_owned(), adapter, attempt, plan: Plan::Skip }
    }

    fn retries_left(&self, topology: &Topology) -> bool {
        topology.retry_queue(&self.queue, self.attempt as usize - 1).is_some()
    }
}

fn delivery_labels(delivery: &Delivery) -> (String, String, u32) {
    let headers = delivery.properties.headers().as_ref();
    let routing_key = header_string(headers, envelope::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    let adapter = routing_key.split('.').nth(1).unwrap_or("unknown").to_owned();
    // Bounded: the header comes from outside (a publisher, a replay) and may say 0 or 2^63.
    let attempt = header_string(headers, envelope::ATTEMPT).and_then(|a| a.parse::<u64>().ok()).unwrap_or(1);
    let attempt = attempt.clamp(1, 1000) as u32;
    (adapter, routing_key, attempt)
}

fn record_applied(item: &Inflight, effects: &[Effect]) {
    for effect in effects {
        metrics::counter!("intake_messages_applied_total", "adapter" => item.adapter.clone(), "effect" => crate::metrics::effect_label(*effect)).increment(1);
    }
    if let Some(ms) = header_string(item.delivery.properties.headers().as_ref(), envelope::PUBLISHED_AT_MS)
        .and_then(|v| v.parse::<i64>().ok())
    {
        let latency = (Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0;
        metrics::histogram!("intake_publish_to_commit_seconds", "adapter" => item.adapter.clone()).record(latency);
    }
}

/// Run `f` until it stops failing transiently, sleeping with exponential backoff; `None` when
/// shutdown is requested meanwhile.
async fn with_backoff<T, F, Fut>(shared: &Shared, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Transient>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(Transient(e)) => {
                tracing::warn!(error = %e, retry_in = ?delay, "transient failure; deliveries stay unacked");
                metrics::counter!("intake_transient_failures_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutdown.cancelled() => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
