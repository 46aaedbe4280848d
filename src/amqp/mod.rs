//! RabbitMQ transport: topology, the publisher contract (envelope), publishing with confirms,
//! the consumer (worker) and dead-letter operations.

pub mod dlq;
pub mod envelope;
pub mod nodes;
pub mod properties;
pub mod publish;
pub mod topology;
pub mod worker;

use std::time::Duration;

use clap::{Args, ValueEnum};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;

use crate::config::DEFAULT_AMQP_URL;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

/// Broker connection and topology names, shared by every AMQP subcommand.
#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// RabbitMQ URL (the vhost is URL-encoded: `%2f` is `/`), or several nodes of a cluster,
    /// comma-separated: a process connects to the first that answers and, when its connection
    /// is lost, reconnects to another.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,

    /// Topic exchange publishers send to; routing key `<channelType>.<adapterKey>`.
    #[arg(long, env = "INTAKE_EXCHANGE", default_value = "intake.inbound")]
    pub exchange: String,

    /// Prefix of the per-channel-type queues (`<prefix>.email`, `<prefix>.chat`,
    /// `<prefix>.webhook`) and their retry queues.
    #[arg(long, env = "INTAKE_QUEUE_PREFIX", default_value = "intake")]
    pub queue_prefix: String,

    /// Queue that keeps dead-lettered messages with their reason.
    #[arg(long, env = "INTAKE_DEAD_QUEUE", default_value = "intake.dead")]
    pub dead_queue: String,

    /// Queue type for the main and dead-letter queues. Changing it for existing queues needs
    /// them deleted first (RabbitMQ refuses to redeclare a queue with other arguments).
    #[arg(long, env = "INTAKE_QUEUE_TYPE", value_enum, default_value = "classic")]
    pub queue_type: QueueType,

    /// For quorum queues: deliveries of one message before RabbitMQ drops it to the dead
    /// queue (guards against messages that crash the worker).
    #[arg(long, env = "INTAKE_DELIVERY_LIMIT", default_value_t = 20)]
    pub delivery_limit: u32,

    /// Delays of the retry path, in order (e.g. `1s,5s,30s,2m,10m`); after the last one a
    /// message that still fails is dead-lettered with reason `retries_exhausted`.
    #[arg(long, env = "INTAKE_RETRY_DELAYS", value_delimiter = ',', default_value = "1s,5s,30s,2m,10m", value_parser = parse_duration)]
    pub retry_delays: Vec<Duration>,
}

/// Parse `250ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a duration like 500ms, 5s, 2m, 1h or 7d"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86400)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)")),
    }
}

/// Connect to one of the nodes in `urls` (one URL or several, comma-separated), each with a
/// timeout, so a dead broker gives an error instead of a hang. See [`nodes`].
pub async fn connect(urls: &str, name: &str) -> anyhow::Result<Connection> {
    nodes::connect(urls, name).await
}

/// Close a channel and wait for the broker's answer; its unacked deliveries go back to their
/// queues. Every channel is closed this way before its connection: a channel only dropped
/// closes itself in the background, and when the connection is closing by then, lapin takes
/// the refused `channel.close` for a connection error and logs `ERROR … invalid channel state:
/// Closing`.
pub async fn close_channel(channel: &lapin::Channel) {
    if channel.status().connected() {
        let closed = tokio::time::timeout(Duration::from_secs(5), channel.close(200, "bye".into())).await;
        if let Ok(Err(e)) = closed {
            tracing::debug!(error = %e, "channel close");
        }
    }
}

/// Close a connection (after its channels, see [`close_channel`]), waiting at most 5 s.
pub async fn close_connection(connection: &Connection) {
    if connection.status().connected() {
        let closed = tokio::time::timeout(Duration::from_secs(5), connection.close(200, "bye".into())).await;
        if let Ok(Err(e)) = closed {
            tracing::debug!(error = %e, "connection close");
        }
    }
}

/// Read a header as a string (numbers and booleans are printed).
pub fn header_string(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    headers?.inner().get(name).and_then(value_string)
}

pub fn value_string(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        _ => return None,
    })
}

pub fn long_string(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(s.into().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
