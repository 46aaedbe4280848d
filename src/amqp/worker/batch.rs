//! Applying a batch through the update logic, and what a failure means.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use lapin::message::Delivery;
use sqlx::PgPool;
use tracing::Instrument;

use super::{plan, record_applied, settle_batch, with_backoff, Inflight, Plan, Shared, Transient};
use crate::amqp::publish::ConfirmedPublisher;
use crate::update::{self, Effect, UpdateError, UpdateRequest};

/// Plan, apply and settle one batch (the caller acks it). `Ok(false)` means shutdown came while the work could not be
/// finished (it stays unacked and will be redelivered).
pub(super) async fn process_batch(
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
        item.plan = match with_backoff(shared, || plan::plan(shared, &item.delivery).instrument(span.clone())).await {
            Some(plan) => plan,
            None => return Ok(false),
        };
    }

    let requests: Vec<UpdateRequest> =
        inflight.iter().filter_map(|i| i.plan.requests()).flat_map(|r| r.iter().cloned()).collect();
    let started = Instant::now();
    let batch_result = if requests.is_empty() {
        Ok(Vec::new())
    } else {
        // A suspect failure of a whole batch goes straight to one update at a time.
        let no_retries = AtomicU32::new(0);
        match with_backoff(shared, || apply_classified(&shared.pool, &requests, &no_retries)).await {
            Some(result) => result,
            None => return Ok(false),
        }
    };
    match batch_result {
        Ok(outcomes) => {
            metrics::histogram!("intake_apply_duration_seconds").record(started.elapsed().as_secs_f64());
            let mut outcomes = outcomes.into_iter();
            for item in &inflight {
                if let Some(r) = item.plan.requests() {
                    let effects: Vec<Effect> = outcomes.by_ref().take(r.len()).map(|o| o.effect).collect();
                    record_applied(item, &effects);
                    shared.tally.record_ingest(r.iter().filter_map(entry_point_of));
                }
            }
        }
        Err(e) => {
            // Something one message caused (transient failures were retried above): apply
            // every update on its own, so only what fails itself is dead-lettered; each update
            // of a delivery commits on its own merit.
            tracing::warn!(error = %e, size = inflight.len(), "batch failed; applying one update at a time");
            for item in &mut inflight {
                let Some(requests) = item.plan.requests() else { continue };
                let mut effects = Vec::with_capacity(requests.len());
                let mut failure = None;
                for request in requests {
                    let one = std::slice::from_ref(request);
                    let suspect = AtomicU32::new(SUSPECT_RETRIES);
                    match with_backoff(shared, || apply_classified(&shared.pool, one, &suspect)).await {
                        None => return Ok(false),
                        Some(Ok(outcomes)) => effects.extend(outcomes.iter().map(|o| o.effect)),
                        Some(Err(e)) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
                record_applied(item, &effects);
                if !effects.is_empty() {
                    shared.tally.record_ingest(requests.iter().filter_map(entry_point_of));
                }
                if let Some(e) = failure {
                    let mut plan = plan_for_update_error(e);
                    // A partial plan's own failure stays in the error, so one replay can mend both.
                    if let (
                        Plan::Partial { reason, error: partial, .. },
                        Plan::Dead { error, .. } | Plan::Retry { error, .. },
                    ) = (&item.plan, &mut plan)
                    {
                        error.push_str(&format!("; and {reason}: {partial}"));
                    }
                    item.plan = plan;
                }
            }
        }
    }

    settle_batch(shared, publisher, &inflight).await?;
    Ok(true)
}

/// The entry point a channel update came in through (for the last-ingest tally).
fn entry_point_of(request: &UpdateRequest) -> Option<uuid::Uuid> {
    match &request.target {
        update::Target::Channel { entry_point_id, .. } => Some(*entry_point_id),
        _ => None,
    }
}

/// How often a failure that may be the environment's or the message's (a statement timeout,
/// out of memory, an internal error) is retried for one update before it counts as the
/// message's: one slow or huge message must not hold its queue.
pub(super) const SUSPECT_RETRIES: u32 = 3;

/// Apply, separating transient database failures from answers about the batch. `suspect`
/// counts down the retries left for [`DbFailure::Suspect`] failures; at zero they are answers.
pub(super) async fn apply_classified(
    pool: &PgPool,
    requests: &[UpdateRequest],
    suspect: &AtomicU32,
) -> Result<Result<Vec<update::UpdateOutcome>, UpdateError>, Transient> {
    match update::apply_batch(pool, requests).await {
        Err(UpdateError::Database(e)) => match classify_db(&e) {
            DbFailure::Environment => Err(Transient(format!("database: {e}"))),
            DbFailure::Suspect if suspect.load(Ordering::Relaxed) > 0 => {
                suspect.fetch_sub(1, Ordering::Relaxed);
                Err(Transient(format!("database: {e}")))
            }
            _ => Ok(Err(UpdateError::Database(e))),
        },
        other => Ok(other),
    }
}

/// Whose a database failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The environment's: the connection (lost, refused, pool exhausted, too many clients, the
    /// database not accepting connections, missing, read-only after a failover), authentication
    /// and privileges, the server starting up or shutting down, and concurrency (serialization
    /// failure, deadlock, lock not available). Retried until it passes.
    Environment,
    /// Either's: a statement timeout, out of memory or disk, I/O trouble, an internal error.
    /// Retried a few times, then taken as the message's.
    Suspect,
    /// The message's: a value PostgreSQL refuses, an index key over its size limit, a
    /// constraint, and anything else. Permanent for that message.
    Message,
}

pub fn classify_db(e: &sqlx::Error) -> DbFailure {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let class = |prefixes: &[&str]| prefixes.iter().any(|p| code.starts_with(p));
            if class(&["08", "28", "3D", "57P"])
                || matches!(&*code, "53300" | "25006" | "40001" | "40P01" | "55P03" | "55006" | "55000" | "42501")
            {
                DbFailure::Environment
            } else if class(&["53", "58", "XX"]) || code == "57014" {
                DbFailure::Suspect
            } else {
                DbFailure::Message
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => DbFailure::Environment,
        _ => DbFailure::Message,
    }
}

/// Whether a failure may pass by itself (see [`DbFailure`]); the HTTP API answers 503 for those.
pub fn is_transient_db(e: &sqlx::Error) -> bool {
    classify_db(e) != DbFailure::Message
}

/// What PostgreSQL refused, for the dead letter: SQLSTATE, where (constraint, or table and
/// column) and its message.
fn describe_db_error(e: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = e else { return e.to_string() };
    let code = db.code().unwrap_or_default();
    let place = match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        Some(pg) => match (pg.constraint(), pg.table(), pg.column()) {
            (Some(constraint), _, _) => format!(" on `{constraint}`"),
            (None, Some(table), Some(column)) => format!(" on `{table}.{column}`"),
            (None, Some(table), None) => format!(" on `{table}`"),
            _ => String::new(),
        },
        None => String::new(),
    };
    format!("SQLSTATE {code}{place}: {}", db.message())
}

pub(super) fn plan_for_update_error(e: UpdateError) -> Plan {
    match e {
        // The message an edit or status refers to may not have arrived yet.
        UpdateError::MessageNotFound(_) => Plan::Retry { reason: "unknown_message", error: e.to_string() },
        UpdateError::ConversationNotFound => Plan::Dead { reason: "unknown_conversation", error: e.to_string() },
        UpdateError::KeyConflict { .. } => Plan::Dead { reason: "idempotency_conflict", error: e.to_string() },
        UpdateError::Invalid(_) => Plan::Dead { reason: "invalid_update", error: e.to_string() },
        UpdateError::TooLong { .. } => Plan::Dead { reason: "field_too_long", error: e.to_string() },
        UpdateError::KeyReused { .. } => Plan::Dead { reason: "idempotency_key_reused", error: e.to_string() },
        UpdateError::Database(e) => Plan::Dead { reason: "database_rejected", error: describe_db_error(&e) },
    }
}
