//! Dead letters counted by reason and adapter.
//!
//! The dead queue is read with `basic.get` without ack, on a channel of its own that is closed
//! afterwards: every message goes back to the queue (marked redelivered), nothing is removed.
//! The scan is capped, so a huge dead queue costs a bounded amount per sample.

use std::collections::BTreeMap;

use lapin::options::BasicGetOptions;

use super::rabbit::BrokerConnection;
use super::DeadLetterCount;
use crate::amqp::{envelope, header_string};

#[derive(Debug, Clone, Default)]
pub struct DeadCounts {
    /// By reason, then adapter.
    pub counts: Vec<DeadLetterCount>,
    pub scanned: u64,
    /// The queue held more than the cap.
    pub capped: bool,
}

/// Count up to `limit` dead letters of `queue` by reason and adapter, leaving them in place.
pub async fn count_dead_letters(broker: &BrokerConnection, queue: &str, limit: usize) -> anyhow::Result<DeadCounts> {
    let connection = broker.get().await?;
    let channel = connection.create_channel().await?;
    let result = scan(&channel, queue, limit).await;
    // Closing the channel returns every message read above to the queue.
    crate::amqp::close_channel(&channel).await;
    result
}

async fn scan(channel: &lapin::Channel, queue: &str, limit: usize) -> anyhow::Result<DeadCounts> {
    let mut by_key: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut scanned = 0u64;
    let mut capped = false;
    while (scanned as usize) < limit {
        let Some(message) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        scanned += 1;
        *by_key.entry(reason_and_adapter(&message.delivery)).or_default() += 1;
        capped = message.message_count > 0;
    }
    let counts =
        by_key.into_iter().map(|((reason, adapter), count)| DeadLetterCount { reason, adapter, count }).collect();
    Ok(DeadCounts { counts, scanned, capped })
}

/// As `intake dlq list` names them: a message dead-lettered by RabbitMQ itself (the quorum
/// delivery limit) has no intake headers, and its adapter comes from its routing key.
fn reason_and_adapter(delivery: &lapin::message::Delivery) -> (String, String) {
    let headers = delivery.properties.headers().as_ref();
    let reason = header_string(headers, envelope::REASON).unwrap_or_else(|| "broker_dead_lettered".into());
    let adapter = header_string(headers, envelope::ADAPTER).unwrap_or_else(|| {
        let routing_key = header_string(headers, envelope::ORIGINAL_ROUTING_KEY)
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        routing_key.split('.').nth(1).unwrap_or("unknown").to_owned()
    });
    (reason, adapter)
}
