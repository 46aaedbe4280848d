//! Inspecting and replaying the dead queue.
//!
//! Listing reads messages with `basic.get` and never acks them; closing the channel puts them
//! back. Replay publishes each chosen message (with confirm) to its original exchange and
//! routing key and only then acks it in the dead queue, so a crash mid-replay duplicates at
//! worst, and the worker's idempotency keys make a duplicate a no-op.

use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use serde::Serialize;

use super::publish::ConfirmedPublisher;
use super::{envelope, header_string};

/// One dead-lettered message, as `dlq list` and `dlq show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub reason: String,
    pub error: String,
    pub adapter: String,
    pub attempts: u32,
    pub routing_key: String,
    pub exchange: String,
    pub first_seen: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub size: usize,
    #[serde(skip)]
    pub body: Vec<u8>,
    #[serde(skip)]
    delivery_tag: u64,
    #[serde(skip)]
    properties: lapin::BasicProperties,
}

impl DeadLetter {
    fn from_message(message: lapin::message::BasicGetMessage) -> Self {
        let delivery = message.delivery;
        let headers = delivery.properties.headers().as_ref();
        let get = |name| header_string(headers, name);
        let time = |name| get(name).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        // Messages dead-lettered by RabbitMQ itself (quorum delivery limit) carry no intake
        // headers: describe them from what the broker recorded.
        let routing_key =
            get(envelope::ORIGINAL_ROUTING_KEY).unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        DeadLetter {
            id: get(envelope::DEAD_ID).unwrap_or_else(|| format!("tag-{}", delivery.delivery_tag)),
            reason: get(envelope::REASON).unwrap_or_else(|| "broker_dead_lettered".into()),
            error: get(envelope::ERROR).unwrap_or_default(),
            adapter: get(envelope::ADAPTER)
                .unwrap_or_else(|| routing_key.split('.').nth(1).unwrap_or("unknown").to_owned()),
            attempts: get(envelope::ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(1),
            exchange: get(envelope::ORIGINAL_EXCHANGE).unwrap_or_else(|| delivery.exchange.as_str().to_owned()),
            routing_key,
            first_seen: time(envelope::FIRST_SEEN),
            dead_at: time(envelope::DEAD_AT),
            message_id: delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned()),
            content_type: delivery.properties.content_type().as_ref().map(|m| m.as_str().to_owned()),
            size: delivery.data.len(),
            body: delivery.data,
            delivery_tag: delivery.delivery_tag,
            properties: delivery.properties,
        }
    }

    /// Age since it was dead-lettered, e.g. `3m`, `2h`, `4d`.
    pub fn age(&self, now: DateTime<Utc>) -> String {
        let Some(at) = self.dead_at else { return "?".into() };
        let secs = (now - at).num_seconds().max(0);
        match secs {
            s if s < 60 => format!("{s}s"),
            s if s < 3600 => format!("{}m", s / 60),
            s if s < 86400 => format!("{}h", s / 3600),
            s => format!("{}d", s / 86400),
        }
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<String>),
    Reason(String),
}

impl Selection {
    fn matches(&self, d: &DeadLetter) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.contains(&d.id),
            Selection::Reason(r) => *r == d.reason,
        }
    }
}

/// Read up to `limit` dead letters without removing them.
pub async fn list(channel: &Channel, queue: &str, limit: usize) -> lapin::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    while out.len() < limit {
        match channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? {
            Some(message) => out.push(DeadLetter::from_message(message)),
            None => break,
        }
    }
    Ok(out)
}

/// Replay or drop the selected dead letters; returns how many were handled. The others are
/// left in the queue (unacked until the channel closes).
pub async fn settle(
    channel: &Channel,
    publisher: Option<&ConfirmedPublisher>,
    queue: &str,
    selection: &Selection,
    limit: usize,
    mut progress: impl FnMut(&DeadLetter),
) -> anyhow::Result<usize> {
    let mut done = 0;
    let mut seen = 0;
    while seen < limit {
        let Some(message) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        seen += 1;
        let dead = DeadLetter::from_message(message);
        if !selection.matches(&dead) {
            continue;
        }
        if let Some(publisher) = publisher {
            let mut headers = dead.properties.headers().clone().unwrap_or_default();
            // A replayed message starts its attempts afresh; its history stays for inspection.
            for name in [envelope::ATTEMPT, envelope::REASON, envelope::ERROR, envelope::DEAD_AT] {
                let mut inner = headers.inner().clone();
                inner.remove(name);
                headers = FieldTable::from(inner);
            }
            let replays =
                header_string(Some(&headers), envelope::REPLAYED).and_then(|r| r.parse::<u32>().ok()).unwrap_or(0);
            headers.insert(envelope::REPLAYED.into(), super::long_string((replays + 1).to_string()));
            let properties = dead.properties.clone().with_headers(headers);
            publisher.publish(&dead.exchange, &dead.routing_key, &dead.body, properties).await?;
        }
        channel.basic_ack(dead.delivery_tag, BasicAckOptions::default()).await?;
        done += 1;
        progress(&dead);
    }
    Ok(done)
}

pub async fn purge_all(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await
}

/// Messages in the queue right now (ready, not unacked).
pub async fn depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let q = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

impl DeadLetter {
    /// The message's AMQP properties as they are in the dead queue (headers included), for
    /// `dlq show` and the ops console ([`super::properties`] renders them).
    pub fn properties(&self) -> &lapin::BasicProperties {
        &self.properties
    }
}
