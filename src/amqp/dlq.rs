//! Inspecting and replaying the dead queue.
//!
//! Listing reads messages with `basic.get` and never acks them; closing the channel puts them
//! back. Replay publishes each chosen message (with confirm) to its original exchange and
//! routing key and only then acks it in the dead queue, so a crash mid-replay duplicates at
//! worst, and the worker's idempotency keys make a duplicate a no-op.
//!
//! The CLI (`intake dlq`) and the ops console share [`Selection`] and [`Filter`], so both pick
//! the same messages for the same criteria, and [`settle`] paces replays ([`Rate`]) so a replay
//! of a large backlog leaves room for live traffic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use serde::Serialize;

use super::publish::{ConfirmedPublisher, PublishError};
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
    /// `x-intake-external-channel-id`, when the publisher set it.
    pub external_channel_id: Option<String>,
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
            external_channel_id: get(envelope::EXTERNAL_CHANNEL_ID),
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

    /// The channel type, the first word of the original routing key.
    pub fn channel_type(&self) -> &str {
        self.routing_key.split('.').next().unwrap_or_default()
    }

    /// Every AMQP property and header as the broker delivered it (for the detail view).
    pub fn properties(&self) -> &lapin::BasicProperties {
        &self.properties
    }
}

/// Criteria a dead letter must all meet; unset ones match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub reason: Option<String>,
    pub adapter: Option<String>,
    /// The channel type of the original routing key (`email`, `chat`, `webhook`).
    pub channel_type: Option<String>,
    /// `x-intake-external-channel-id`.
    pub external_channel_id: Option<String>,
    /// Dead-lettered at least this long ago.
    pub older_than: Option<Duration>,
    /// Dead-lettered less than this long ago.
    pub newer_than: Option<Duration>,
    /// Case-insensitive substring of the body or the error.
    pub text: Option<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, d: &DeadLetter, now: DateTime<Utc>) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if !same(&self.reason, &d.reason)
            || !same(&self.adapter, &d.adapter)
            || !same(&self.channel_type, d.channel_type())
            || !same(&self.external_channel_id, d.external_channel_id.as_deref().unwrap_or_default())
        {
            return false;
        }
        if self.older_than.is_some() || self.newer_than.is_some() {
            // A message without a dead-letter time (dead-lettered by the broker) has no age.
            let Some(age) = d.dead_at.or(d.first_seen).and_then(|at| (now - at).to_std().ok()) else {
                return false;
            };
            if self.older_than.is_some_and(|min| age < min) || self.newer_than.is_some_and(|max| age >= max) {
                return false;
            }
        }
        match self.text.as_deref().map(str::to_lowercase) {
            Some(text) if !text.is_empty() => {
                d.error.to_lowercase().contains(&text)
                    || String::from_utf8_lossy(&d.body).to_lowercase().contains(&text)
            }
            _ => true,
        }
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<String>),
    Reason(String),
    Matching(Filter),
}

impl Selection {
    pub fn matches(&self, d: &DeadLetter, now: DateTime<Utc>) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.contains(&d.id),
            Selection::Reason(r) => *r == d.reason,
            Selection::Matching(filter) => filter.matches(d, now),
        }
    }
}

/// A replay (or purge) pace in messages per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

/// The console's and the CLI's default: far below what a worker applies, so live traffic keeps
/// its throughput while a backlog is replayed.
pub const DEFAULT_REPLAY_RATE: Rate = Rate(50.0);

impl std::str::FromStr for Rate {
    type Err = String;

    /// `N` or `N/s` messages per second (`0` or `unlimited`: as fast as the broker confirms).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Rate(0.0));
        }
        let number = s.strip_suffix("/s").unwrap_or(s).trim();
        match number.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(Rate(n)),
            _ => Err(format!("`{s}` is not a rate like 50 or 50/s (messages per second; 0 for unlimited)")),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 > 0.0 {
            write!(f, "{}/s", self.0)
        } else {
            f.write_str("unlimited")
        }
    }
}

/// Spaces actions `1/rate` apart on a fixed schedule (a tokio interval that delays, not bursts,
/// after a slow step): no token-bucket crate is needed for one steady stream.
struct Pacer(Option<tokio::time::Interval>);

impl Pacer {
    fn new(rate: Option<Rate>) -> Self {
        Pacer(rate.filter(|r| r.0 > 0.0).map(|r| {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / r.0));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        }))
    }

    async fn wait(&mut self) {
        if let Some(interval) = &mut self.0 {
            interval.tick().await;
        }
    }
}

/// What [`settle`] did with one message it looked at.
#[derive(Debug)]
pub enum Step<'a> {
    /// Not selected; left in the queue.
    Skipped,
    /// Replayed (published and confirmed) or purged, then removed.
    Done(&'a DeadLetter),
    /// The broker refused the republish (unroutable, nack); left in the dead queue.
    Failed(&'a DeadLetter, &'a PublishError),
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

/// Replay or drop the selected dead letters among the first `limit`, at most `rate` per second;
/// returns how many were handled. The others, and those the broker refused to take back, are
/// left in the queue (unacked until the channel closes). `progress` hears of every message
/// looked at.
pub async fn settle(
    channel: &Channel,
    publisher: Option<&ConfirmedPublisher>,
    queue: &str,
    selection: &Selection,
    limit: usize,
    rate: Option<Rate>,
    mut progress: impl FnMut(Step<'_>),
) -> anyhow::Result<usize> {
    let mut done = 0;
    let mut seen = 0;
    let mut pacer = Pacer::new(rate);
    let now = Utc::now();
    while seen < limit {
        // Ids are unique: stop once all are found instead of scanning the whole queue.
        if let Selection::Ids(ids) = selection {
            if done >= ids.len() {
                break;
            }
        }
        let Some(message) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        seen += 1;
        let dead = DeadLetter::from_message(message);
        if !selection.matches(&dead, now) {
            progress(Step::Skipped);
            continue;
        }
        pacer.wait().await;
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
            match publisher.publish(&dead.exchange, &dead.routing_key, &dead.body, properties).await {
                Ok(()) => {}
                // The broker is there but will not take this one: the others may still go.
                Err(e @ (PublishError::Nacked | PublishError::Unroutable { .. })) => {
                    progress(Step::Failed(&dead, &e));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        channel.basic_ack(dead.delivery_tag, BasicAckOptions::default()).await?;
        done += 1;
        progress(Step::Done(&dead));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(reason: &str, error: &str, body: &str, dead_mins_ago: Option<i64>) -> DeadLetter {
        let now = Utc::now();
        DeadLetter {
            id: "d1".into(),
            reason: reason.into(),
            error: error.into(),
            adapter: "webhook".into(),
            attempts: 1,
            routing_key: "webhook.webhook".into(),
            exchange: "intake.inbound".into(),
            first_seen: None,
            dead_at: dead_mins_ago.map(|m| now - chrono::Duration::minutes(m)),
            message_id: None,
            content_type: None,
            external_channel_id: Some("shop".into()),
            size: body.len(),
            body: body.as_bytes().to_vec(),
            delivery_tag: 1,
            properties: lapin::BasicProperties::default(),
        }
    }

    #[test]
    fn filters_match_on_every_field_set() {
        let now = Utc::now();
        let d = letter("unknown_entry_point", "no entry point `shop`", r#"{"body":"Where is my Order?"}"#, Some(90));
        let f = |filter: Filter| filter.matches(&d, now);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            reason: Some("unknown_entry_point".into()),
            adapter: Some("webhook".into()),
            ..Default::default()
        }));
        assert!(!f(Filter { reason: Some("malformed_payload".into()), ..Default::default() }));
        assert!(f(Filter {
            channel_type: Some("webhook".into()),
            external_channel_id: Some("shop".into()),
            ..Default::default()
        }));
        assert!(!f(Filter { external_channel_id: Some("other".into()), ..Default::default() }));
        assert!(f(Filter { older_than: Some(Duration::from_secs(3600)), ..Default::default() }));
        assert!(!f(Filter { newer_than: Some(Duration::from_secs(3600)), ..Default::default() }));
        assert!(f(Filter { text: Some("my order".into()), ..Default::default() }), "body, case-insensitive");
        assert!(f(Filter { text: Some("ENTRY POINT".into()), ..Default::default() }), "error");
        assert!(!f(Filter { text: Some("refund".into()), ..Default::default() }));
        let timeless = letter("broker_dead_lettered", "", "", None);
        assert!(!Filter { older_than: Some(Duration::from_secs(1)), ..Default::default() }.matches(&timeless, now));
        assert!(Selection::Matching(Filter::default()).matches(&timeless, now));
    }

    #[test]
    fn rates_parse() {
        assert_eq!("50".parse::<Rate>(), Ok(Rate(50.0)));
        assert_eq!("12.5/s".parse::<Rate>(), Ok(Rate(12.5)));
        assert_eq!("0".parse::<Rate>(), Ok(Rate(0.0)));
        assert_eq!("unlimited".parse::<Rate>(), Ok(Rate(0.0)));
        assert!("-1".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
        assert_eq!(Rate(50.0).to_string(), "50/s");
        assert_eq!(Rate(0.0).to_string(), "unlimited");
    }

    #[tokio::test]
    async fn the_pacer_spaces_steps() {
        let started = tokio::time::Instant::now();
        let mut pacer = Pacer::new(Some(Rate(100.0)));
        for _ in 0..11 {
            pacer.wait().await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(95), "10 intervals of 10ms, took {elapsed:?}");
        let mut unpaced = Pacer::new(Some(Rate(0.0)));
        let started = tokio::time::Instant::now();
        for _ in 0..1000 {
            unpaced.wait().await;
        }
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
