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

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use intake_adapters::{AdapterRegistry, ChannelType, Delivery as AdapterDelivery, EntryPointInfo, Headers};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::envelope::{self, parse_routing_key};
use super::publish::ConfirmedPublisher;
use super::topology::Topology;
use super::{header_string, long_string};
use crate::attachments::AttachmentStore;
use crate::smtp::{self, Mailer, SendError, SendJob};
use crate::store::{self, ResolveError, ResolvedEntryPoint};
use crate::update::{self, Effect, MessageExtras, Target, UpdateError, UpdateRequest};

/// Most batches one consumer applies at once (each in its own transaction); the prefetch must
/// cover them (`prefetch / batch_size`, at least one).
const MAX_BATCHES_IN_FLIGHT: usize = 2;

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
}

impl WorkerSettings {
    pub fn new(topology: Topology) -> Self {
        WorkerSettings {
            topology,
            prefetch: 200,
            batch_size: 100,
            batch_wait: Duration::from_millis(5),
            max_message_bytes: 25 * 1024 * 1024,
            channel_types: ChannelType::ALL.to_vec(),
            entry_point_cache_ttl: Duration::from_secs(30),
            mailer: None,
            attachment_store: None,
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
    let shared = Arc::new(Shared { pool, registry, settings, cache: EntryPointCache::default(), shutdown });
    let mut backoff = Duration::from_millis(250);
    loop {
        if shared.shutdown.is_cancelled() {
            return Ok(());
        }
        let started = Instant::now();
        match run_session(&shared, &amqp_url).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "worker session ended; reconnecting");
                metrics::counter!("intake_worker_reconnects_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
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
    let _ = close_connection(&connection).await;
    result
}

async fn close_connection(connection: &Connection) -> lapin::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), connection.close(200, "bye".into())).await.unwrap_or(Ok(()))
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
    channel.basic_qos(settings.prefetch, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let consumer_tag = consumer.tag();
    // Up to `max_in_flight` batches are applied at once (each in its own transaction), so the
    // next batch is planned and applied while the previous one commits; acks still go out in
    // delivery order. The outbound queue sends one batch at a time.
    let max_in_flight = match kind {
        QueueKind::Inbound => (usize::from(settings.prefetch) / settings.batch_size).clamp(1, MAX_BATCHES_IN_FLIGHT),
        QueueKind::OutboundEmail => 1,
    };
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut pending: Vec<Delivery> = Vec::with_capacity(settings.batch_size);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut stopping = false;
    loop {
        let room = in_flight.len() < max_in_flight;
        if room && !pending.is_empty() && (pending.len() >= settings.batch_size || stopping) {
            let batch = std::mem::replace(&mut pending, Vec::with_capacity(settings.batch_size));
            deadline = None;
            in_flight.push_back(run_batch(&shared, &queue, kind, &publisher, batch));
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
                in_flight.push_back(run_batch(&shared, &queue, kind, &publisher, batch));
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
    let _ = channel.basic_cancel(consumer_tag, BasicCancelOptions::default()).await;
    tracing::info!(%queue, "consumer stopped");
    Ok(())
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
    let finished = match kind {
        QueueKind::Inbound => process_batch(shared, queue, publisher, batch).await?,
        QueueKind::OutboundEmail => process_outbound(shared, queue, publisher, batch).await?,
    };
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

/// Plan, apply and settle one batch (the caller acks it). `Ok(false)` means shutdown came while the work could not be
/// finished (it stays unacked and will be redelivered).
async fn process_batch(
    shared: &Shared,
    queue: &str,
    publisher: &ConfirmedPublisher,
    batch: Vec<Delivery>,
) -> anyhow::Result<bool> {
    metrics::histogram!("intake_batch_size").record(batch.len() as f64);
    let mut inflight: Vec<Inflight> = batch.into_iter().map(|d| Inflight::new(d, queue)).collect();
    // Planning reads entry points: retry it while the database is unreachable.
    for item in &mut inflight {
        let span = tracing::info_span!(
            "delivery",
            tag = item.delivery.delivery_tag,
            message_id = item.delivery.properties.message_id().as_ref().map(|m| m.as_str()).unwrap_or(""),
            adapter = %item.adapter,
            attempt = item.attempt,
        );
        item.plan = match with_backoff(shared, || plan(shared, &item.delivery).instrument(span.clone())).await {
            Some(plan) => plan,
            None => return Ok(false),
        };
    }

    let requests: Vec<UpdateRequest> = inflight
        .iter()
        .filter_map(|i| match &i.plan {
            Plan::Apply(r) => Some(r.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    let started = Instant::now();
    let batch_result = if requests.is_empty() {
        Ok(Vec::new())
    } else {
        match with_backoff(shared, || apply_classified(&shared.pool, &requests)).await {
            Some(result) => result,
            None => return Ok(false),
        }
    };
    match batch_result {
        Ok(outcomes) => {
            metrics::histogram!("intake_apply_duration_seconds").record(started.elapsed().as_secs_f64());
            let mut outcomes = outcomes.into_iter();
            for item in &inflight {
                if let Plan::Apply(r) = &item.plan {
                    let effects: Vec<Effect> = outcomes.by_ref().take(r.len()).map(|o| o.effect).collect();
                    record_applied(item, &effects);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = inflight.len(), "batch failed; applying one by one");
            for item in &mut inflight {
                let Plan::Apply(requests) = &item.plan else { continue };
                let result = match with_backoff(shared, || apply_classified(&shared.pool, requests)).await {
                    Some(r) => r,
                    None => return Ok(false),
                };
                match result {
                    Ok(outcomes) => {
                        let effects: Vec<Effect> = outcomes.iter().map(|o| o.effect).collect();
                        record_applied(item, &effects);
                    }
                    Err(e) => item.plan = plan_for_update_error(e),
                }
            }
        }
    }

    settle_batch(shared, publisher, &inflight).await?;
    Ok(true)
}

/// Republish what goes to a retry queue or the dead queue (confirmed); the caller then acks
/// the whole batch at once, in delivery order.
async fn settle_batch(shared: &Shared, publisher: &ConfirmedPublisher, inflight: &[Inflight]) -> anyhow::Result<()> {
    for item in inflight {
        match &item.plan {
            Plan::Retry { reason, error } => retry_or_dead(shared, publisher, item, reason, error).await?,
            Plan::Dead { reason, error } => dead_letter(shared, publisher, item, reason, error).await?,
            Plan::Skip => {
                // Debug, not info: Slack reactions and the like are common and harmless.
                let message_id = item.delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned());
                tracing::debug!(adapter = %item.adapter, message_id, "nothing to apply; acked");
                metrics::counter!("intake_messages_skipped_total", "adapter" => item.adapter.clone()).increment(1)
            }
            Plan::Apply(_) => {}
        }
    }
    Ok(())
}

/// Send agent replies one by one; each ends sent, scheduled for retry, or dead-lettered with
/// the message marked failed.
async fn process_outbound(
    shared: &Shared,
    queue: &str,
    publisher: &ConfirmedPublisher,
    batch: Vec<Delivery>,
) -> anyhow::Result<bool> {
    let mailer = shared.settings.mailer.as_ref().expect("outbound queue is consumed only with a mailer");
    let mut inflight: Vec<Inflight> = batch.into_iter().map(|d| Inflight::new(d, queue)).collect();
    for item in &mut inflight {
        let job: SendJob = match serde_json::from_slice(&item.delivery.data) {
            Ok(job) => job,
            Err(e) => {
                item.plan = Plan::Dead { reason: "malformed_payload", error: format!("outbound email job: {e}") };
                continue;
            }
        };
        if let Some(request) = job.append_request() {
            let requests = [request];
            let Some(result) = with_backoff(shared, || apply_classified(&shared.pool, &requests)).await else {
                return Ok(false);
            };
            if let Err(e) = result {
                item.plan = plan_for_update_error(e);
                continue;
            }
        }
        let span = tracing::info_span!("send", conversation_id = %job.conversation_id, key = %job.message_key);
        item.plan = match mailer.send(&shared.pool, &job).instrument(span).await {
            Ok(_) => {
                metrics::counter!("intake_emails_sent_total").increment(1);
                Plan::Apply(Vec::new())
            }
            Err(SendError::Transient(error)) if item.retries_left(&shared.settings.topology) => {
                let _ = smtp::record_status(&shared.pool, &job, "deferred", Some(error.clone())).await;
                Plan::Retry { reason: "smtp_unavailable", error }
            }
            Err(SendError::Transient(error)) => {
                let _ = smtp::record_failure(&shared.pool, &job, &error).await;
                Plan::Dead { reason: "retries_exhausted", error: format!("smtp_unavailable: {error}") }
            }
            Err(SendError::Permanent(error)) => {
                let _ = smtp::record_failure(&shared.pool, &job, &error).await;
                Plan::Dead { reason: "smtp_rejected", error }
            }
        };
    }
    settle_batch(shared, publisher, &inflight).await?;
    Ok(true)
}

fn delivery_labels(delivery: &Delivery) -> (String, String, u32) {
    let headers = delivery.properties.headers().as_ref();
    let routing_key = header_string(headers, envelope::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
    let adapter = routing_key.split('.').nth(1).unwrap_or("unknown").to_owned();
    let attempt = header_string(headers, envelope::ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1);
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

/// Apply, separating transient database failures from answers about the batch.
async fn apply_classified(
    pool: &PgPool,
    requests: &[UpdateRequest],
) -> Result<Result<Vec<update::UpdateOutcome>, UpdateError>, Transient> {
    match update::apply_batch(pool, requests).await {
        Err(UpdateError::Database(e)) if is_transient_db(&e) => Err(Transient(format!("database: {e}"))),
        other => Ok(other),
    }
}

/// Data and integrity errors are about the message (e.g. a NUL byte PostgreSQL refuses);
/// everything else about the database (down, restarting, out of connections) passes.
pub fn is_transient_db(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            !(code.starts_with("22") || code.starts_with("23"))
        }
        sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

fn plan_for_update_error(e: UpdateError) -> Plan {
    match e {
        // The message an edit or status refers to may not have arrived yet.
        UpdateError::MessageNotFound(_) => Plan::Retry { reason: "unknown_message", error: e.to_string() },
        UpdateError::ConversationNotFound => Plan::Dead { reason: "unknown_conversation", error: e.to_string() },
        UpdateError::KeyConflict { .. } => Plan::Dead { reason: "idempotency_conflict", error: e.to_string() },
        UpdateError::Invalid(_) => Plan::Dead { reason: "invalid_update", error: e.to_string() },
        UpdateError::Database(_) => Plan::Dead { reason: "database_rejected", error: e.to_string() },
    }
}

/// Decode the delivery and resolve its entry points.
async fn plan(shared: &Shared, delivery: &Delivery) -> Result<Plan, Transient> {
    let dead = |reason: &'static str, error: String| Ok(Plan::Dead { reason, error });
    let (_, routing_key, _) = delivery_labels(delivery);
    let (channel_type, adapter_key, suffix) = match parse_routing_key(&routing_key) {
        Ok(parts) => parts,
        Err(e) => return dead("bad_routing_key", e),
    };
    if let Some(suffix) = suffix {
        return dead("bad_routing_key", format!("routing key `{routing_key}`: no consumer for `.{suffix}` messages"));
    }
    let limit = shared.settings.max_message_bytes;
    if delivery.data.len() > limit {
        return dead(
            "payload_too_large",
            format!("body is {} bytes, over the {limit}-byte limit", delivery.data.len()),
        );
    }
    let Some(adapter) = shared.registry.get(channel_type, adapter_key) else {
        return dead("unknown_adapter", format!("no adapter `{adapter_key}` for channel type {channel_type}"));
    };
    let properties_headers = delivery.properties.headers().as_ref();
    let headers: Headers = properties_headers
        .map(|t| {
            t.inner()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), super::value_string(v)?)))
                .collect()
        })
        .unwrap_or_default();
    let envelope_external = header_string(properties_headers, envelope::EXTERNAL_CHANNEL_ID);
    let project = header_string(properties_headers, envelope::PROJECT);
    let received_at = delivery_time(&delivery.properties);
    let adapter_delivery = AdapterDelivery {
        body: &delivery.data,
        headers: &headers,
        external_channel_id: envelope_external.as_deref(),
        received_at,
    };
    let updates = match adapter.decode(&adapter_delivery).await {
        Ok(u) => u,
        Err(e) => return dead(e.reason_code(), e.to_string()),
    };
    if updates.is_empty() {
        return Ok(Plan::Skip);
    }
    let mut requests = Vec::with_capacity(updates.len());
    for mut update in updates {
        if update.replace_nul() {
            tracing::debug!(key = update.idempotency_key(), "U+0000 replaced by U+FFFD (PostgreSQL cannot store it)");
        }
        let candidates: Vec<String> =
            update.channel_id_candidates(envelope_external.as_deref()).into_iter().map(str::to_owned).collect();
        if candidates.is_empty() {
            return dead(
                "missing_entry_point",
                format!("neither the payload nor the `{}` header names the entry point", envelope::EXTERNAL_CHANNEL_ID),
            );
        }
        let mut found = None;
        for external in &candidates {
            match resolve_cached(shared, channel_type, external, project.as_deref()).await {
                Ok(ep) => {
                    found = Some(ep);
                    break;
                }
                Err(ResolveError::Unknown { .. }) => continue,
                Err(e @ ResolveError::Ambiguous { .. }) => return dead("ambiguous_entry_point", e.to_string()),
                Err(ResolveError::Database(e)) if is_transient_db(&e) => {
                    return Err(Transient(format!("database: {e}")))
                }
                Err(ResolveError::Database(e)) => return dead("database_rejected", e.to_string()),
            }
        }
        let Some(entry_point) = found else {
            let in_project = project.as_deref().map(|p| format!(" in project `{p}`")).unwrap_or_default();
            let names = candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
            return dead("unknown_entry_point", format!("no {channel_type} entry point{in_project} for {names}"));
        };
        if let Some(store) = &shared.settings.attachment_store {
            store.store(&mut update.action).await.map_err(|e| Transient(format!("attachment store: {e}")))?;
        }
        adapter.refine(
            &mut update,
            &EntryPointInfo {
                external_channel_id: &entry_point.external_channel_id,
                adapter_key: &entry_point.adapter_key,
                metadata: &entry_point.metadata,
            },
        );
        requests.push(UpdateRequest {
            project_id: entry_point.project_id,
            target: Target::Channel { entry_point_id: entry_point.id, thread: update.thread },
            action: Some(update.action),
            extras: MessageExtras::default(),
            attributes: Default::default(),
        });
    }
    Ok(Plan::Apply(requests))
}

/// When the publisher sent it (ms header, else the AMQP timestamp), else now.
fn delivery_time(properties: &BasicProperties) -> DateTime<Utc> {
    let headers = properties.headers().as_ref();
    header_string(headers, envelope::PUBLISHED_AT_MS)
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .or_else(|| properties.timestamp().and_then(|s| DateTime::from_timestamp(s as i64, 0)))
        .unwrap_or_else(Utc::now)
}

async fn resolve_cached(
    shared: &Shared,
    channel_type: ChannelType,
    external: &str,
    project: Option<&str>,
) -> Result<ResolvedEntryPoint, ResolveError> {
    let key = (channel_type, external.to_owned(), project.map(str::to_owned));
    if let Some((ep, at)) = shared.cache.entries.lock().expect("cache lock").get(&key) {
        if at.elapsed() < shared.settings.entry_point_cache_ttl {
            return Ok(ep.clone());
        }
    }
    let ep = store::resolve_entry_point(&shared.pool, channel_type, external, project).await?;
    shared.cache.entries.lock().expect("cache lock").insert(key, (ep.clone(), Instant::now()));
    Ok(ep)
}

/// Headers for a copy of `delivery` that intake republishes (retry or dead letter).
fn republish_headers(item: &Inflight) -> FieldTable {
    let delivery = &item.delivery;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let (_, routing_key, _) = delivery_labels(delivery);
    let original_exchange = header_string(Some(&headers), envelope::ORIGINAL_EXCHANGE)
        .unwrap_or_else(|| delivery.exchange.as_str().to_owned());
    if header_string(Some(&headers), envelope::FIRST_SEEN).is_none() {
        headers.insert(envelope::FIRST_SEEN.into(), long_string(delivery_time(&delivery.properties).to_rfc3339()));
    }
    headers.insert(envelope::ORIGINAL_ROUTING_KEY.into(), long_string(routing_key));
    headers.insert(envelope::ORIGINAL_EXCHANGE.into(), long_string(original_exchange));
    headers
}

async fn retry_or_dead(
    shared: &Shared,
    publisher: &ConfirmedPublisher,
    item: &Inflight,
    reason: &'static str,
    error: &str,
) -> anyhow::Result<()> {
    let Some(retry_queue) = shared.settings.topology.retry_queue(&item.queue, item.attempt as usize - 1) else {
        let error = format!("{reason}: {error} (gave up after {} attempts)", item.attempt);
        return dead_letter(shared, publisher, item, "retries_exhausted", &error).await;
    };
    let mut headers = republish_headers(item);
    headers.insert(envelope::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(item.attempt) + 1));
    headers.insert(envelope::REASON.into(), long_string(reason));
    headers.insert(envelope::ERROR.into(), long_string(envelope::clip_error(error)));
    let properties = item.delivery.properties.clone().with_headers(headers);
    publisher.publish("", &retry_queue, &item.delivery.data, properties).await?;
    tracing::info!(adapter = %item.adapter, reason, attempt = item.attempt, queue = %retry_queue, "message scheduled for retry");
    metrics::counter!("intake_messages_retried_total", "adapter" => item.adapter.clone(), "reason" => reason)
        .increment(1);
    Ok(())
}

async fn dead_letter(
    shared: &Shared,
    publisher: &ConfirmedPublisher,
    item: &Inflight,
    reason: &'static str,
    error: &str,
) -> anyhow::Result<()> {
    let mut headers = republish_headers(item);
    let dead_id = hex::encode(rand::random::<[u8; 6]>());
    headers.insert(envelope::REASON.into(), long_string(reason));
    headers.insert(envelope::ERROR.into(), long_string(envelope::clip_error(error)));
    headers.insert(envelope::ADAPTER.into(), long_string(item.adapter.clone()));
    headers.insert(envelope::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(item.attempt)));
    headers.insert(envelope::DEAD_ID.into(), long_string(dead_id.clone()));
    headers.insert(envelope::DEAD_AT.into(), long_string(Utc::now().to_rfc3339()));
    let properties = item.delivery.properties.clone().with_headers(headers);
    publisher.publish("", &shared.settings.topology.dead_queue, &item.delivery.data, properties).await?;
    let message_id = item.delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned());
    tracing::warn!(adapter = %item.adapter, reason, error, dead_id, message_id, "message dead-lettered");
    metrics::counter!("intake_messages_dead_lettered_total", "adapter" => item.adapter.clone(), "reason" => reason)
        .increment(1);
    Ok(())
}
