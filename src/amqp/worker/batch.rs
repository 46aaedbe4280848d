//! Applying a batch through the update logic, and what a failure means.

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
            // Something one message caused (transient failures were retried above): apply
            // every update on its own, so only what fails itself is dead-lettered; each update
            // of a delivery commits on its own merit.
            tracing::warn!(error = %e, size = inflight.len(), "batch failed; applying one update at a time");
            for item in &mut inflight {
                let Plan::Apply(requests) = &item.plan else { continue };
                let mut effects = Vec::with_capacity(requests.len());
                let mut failure = None;
                for request in requests {
                    let one = std::slice::from_ref(request);
                    match with_backoff(shared, || apply_classified(&shared.pool, one)).await {
                        None => return Ok(false),
                        Some(Ok(outcomes)) => effects.extend(outcomes.iter().map(|o| o.effect)),
                        Some(Err(e)) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
                record_applied(item, &effects);
                if let Some(e) = failure {
                    item.plan = plan_for_update_error(e);
                }
            }
        }
    }

    settle_batch(shared, publisher, &inflight).await?;
    Ok(true)
}

/// Apply, separating transient database failures from answers about the batch.
pub(super) async fn apply_classified(
    pool: &PgPool,
    requests: &[UpdateRequest],
) -> Result<Result<Vec<update::UpdateOutcome>, UpdateError>, Transient> {
    match update::apply_batch(pool, requests).await {
        Err(UpdateError::Database(e)) if is_transient_db(&e) => Err(Transient(format!("database: {e}"))),
        other => Ok(other),
    }
}

/// Only failures of the environment pass by themselves: the connection (lost, refused, pool
/// exhausted, the database not accepting connections or missing, authentication), the server
/// (starting up, shutting down, out of resources, I/O trouble, internal errors), concurrency
/// (serialization failure, deadlock, lock not available) and privileges. Anything else (a
/// value PostgreSQL refuses, an index key over its size limit, a constraint) is caused by the
/// message and is permanent for it, whatever its SQLSTATE class.
pub fn is_transient_db(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            ["08", "28", "3D", "53", "55", "57", "58", "XX"].iter().any(|class| code.starts_with(class))
                || matches!(&*code, "40001" | "40P01" | "42501")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
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
