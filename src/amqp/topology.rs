//! Exchanges and queues, declared idempotently by the worker (and by publishers' tools).
//!
//! ```text
//! intake.inbound (topic) --email.*--> intake.email --(retry)--> intake.email.retry.<delay> --TTL--> intake.email
//!                        --chat.*---> intake.chat     ...
//!                        --webhook.*> intake.webhook  ...
//!                        --email.*.outbound--> intake.email.outbound (agent replies to send by SMTP)
//! any queue --(permanent failure / retries exhausted)--> intake.dead
//! ```

use std::time::Duration;

use intake_adapters::ChannelType;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::{long_string, AmqpArgs, QueueType};

#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue_prefix: String,
    pub dead_queue: String,
    pub queue_type: QueueType,
    pub delivery_limit: u32,
    pub retry_delays: Vec<Duration>,
}

impl From<&AmqpArgs> for Topology {
    fn from(a: &AmqpArgs) -> Self {
        Topology {
            exchange: a.exchange.clone(),
            queue_prefix: a.queue_prefix.clone(),
            dead_queue: a.dead_queue.clone(),
            queue_type: a.queue_type,
            delivery_limit: a.delivery_limit,
            retry_delays: a.retry_delays.clone(),
        }
    }
}

impl Topology {
    /// Names for tests and tools: everything under one prefix.
    pub fn with_prefix(prefix: &str) -> Self {
        Topology {
            exchange: format!("{prefix}.inbound"),
            queue_prefix: prefix.to_owned(),
            dead_queue: format!("{prefix}.dead"),
            queue_type: QueueType::Classic,
            delivery_limit: 20,
            retry_delays: vec![Duration::from_secs(1), Duration::from_secs(5)],
        }
    }

    pub fn queue(&self, channel_type: ChannelType) -> String {
        format!("{}.{}", self.queue_prefix, channel_type.as_str())
    }

    /// Queue of agent replies to send by email (routing key `email.<adapterKey>.outbound`).
    pub fn outbound_email_queue(&self) -> String {
        format!("{}.email.outbound", self.queue_prefix)
    }

    /// Retry queue for the `n`-th retry (0-based) of `queue`.
    pub fn retry_queue(&self, queue: &str, n: usize) -> Option<String> {
        let delay = self.retry_delays.get(n)?;
        Some(format!("{queue}.retry.{}ms", delay.as_millis()))
    }

    /// The consumed queues with the binding pattern of each.
    fn consumed_queues(&self) -> Vec<(String, String)> {
        let mut queues: Vec<(String, String)> =
            ChannelType::ALL.iter().map(|t| (self.queue(*t), format!("{}.*", t.as_str()))).collect();
        queues.push((self.outbound_email_queue(), "email.*.outbound".into()));
        queues
    }

    fn main_queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), long_string("quorum"));
            args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(self.delivery_limit.into()));
            // Messages over the delivery limit go to the dead queue instead of vanishing.
            args.insert("x-dead-letter-exchange".into(), long_string(""));
            args.insert("x-dead-letter-routing-key".into(), long_string(self.dead_queue.clone()));
            // A message over the delivery limit reaches the dead queue at least once (RabbitMQ
            // 3.10+; older brokers ignore these and drop it at most once). at-least-once needs
            // reject-publish; without a length limit nothing is ever rejected.
            args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
            args.insert("x-overflow".into(), long_string("reject-publish"));
        }
        args
    }

    /// Declare everything. Safe to run from several processes at once.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let mut dead_args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            dead_args.insert("x-queue-type".into(), long_string("quorum"));
        }
        channel.queue_declare(self.dead_queue.as_str().into(), durable, dead_args).await?;
        for (queue, pattern) in self.consumed_queues() {
            channel.queue_declare(queue.as_str().into(), durable, self.main_queue_args()).await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.exchange.as_str().into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            for (n, delay) in self.retry_delays.iter().enumerate() {
                let retry = self.retry_queue(&queue, n).expect("delay exists");
                let mut args = FieldTable::default();
                if self.queue_type == QueueType::Quorum {
                    // Replicated like the queue it feeds: a classic retry queue lives on one node
                    // and holds its messages hostage while that node is down.
                    args.insert("x-queue-type".into(), long_string("quorum"));
                    args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
                    args.insert("x-overflow".into(), long_string("reject-publish"));
                }
                args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
                args.insert("x-dead-letter-exchange".into(), long_string(""));
                args.insert("x-dead-letter-routing-key".into(), long_string(queue.clone()));
                channel.queue_declare(retry.as_str().into(), durable, args).await?;
            }
        }
        Ok(())
    }

    /// Every queue name, for clean-up in tests and tools.
    pub fn all_queues(&self) -> Vec<String> {
        let mut names = vec![self.dead_queue.clone()];
        for (queue, _) in self.consumed_queues() {
            names.extend((0..self.retry_delays.len()).filter_map(|n| self.retry_queue(&queue, n)));
            names.push(queue);
        }
        names
    }
}
