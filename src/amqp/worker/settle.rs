//! Settling: republish what goes to a retry queue or the dead queue (confirmed) before the ack.

use chrono::Utc;
use lapin::types::{AMQPValue, FieldTable};

use super::{delivery_labels, delivery_time, Inflight, Plan, Shared};
use crate::amqp::envelope;
use crate::amqp::publish::ConfirmedPublisher;
use crate::amqp::{header_string, long_string};

/// Republish what goes to a retry queue or the dead queue (confirmed); the caller then acks
/// the whole batch at once, in delivery order.
pub(super) async fn settle_batch(
    shared: &Shared,
    publisher: &ConfirmedPublisher,
    inflight: &[Inflight],
) -> anyhow::Result<()> {
    for item in inflight {
        match &item.plan {
            Plan::Retry { reason, error } => retry_or_dead(shared, publisher, item, reason, error).await?,
            Plan::Dead { reason, error } => dead_letter(shared, publisher, item, reason, error).await?,
            // Its updates have applied by now; the delivery's dead letter names what did not.
            Plan::Partial { requests, reason, error } => {
                let error =
                    format!("{error}; the other {} were applied, and a replay finds them stored", requests.len());
                dead_letter(shared, publisher, item, reason, &error).await?
            }
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

/// Headers for a copy of `delivery` that intake republishes (retry or dead letter).
pub(super) fn republish_headers(item: &Inflight) -> FieldTable {
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

pub(super) async fn retry_or_dead(
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

pub(super) async fn dead_letter(
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
    shared.tally.record_dead_letter();
    Ok(())
}
