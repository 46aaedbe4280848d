//! Publishing with publisher confirms: a message counts as sent only once the broker
//! confirmed it (and routed it: `mandatory` makes an unroutable message an error).

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use super::long_string;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for exchange `{exchange}` routing key `{routing_key}`")]
    Unroutable { exchange: String, routing_key: String },
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// A channel in confirm mode.
pub struct ConfirmedPublisher {
    channel: Channel,
}

impl ConfirmedPublisher {
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publish and wait for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        check_confirm(exchange, routing_key, confirm)
    }
}

impl ConfirmedPublisher {
    /// Publish many messages to one exchange, keeping up to `window` unconfirmed at a time
    /// (confirms are pipelined, not waited for one by one). Fails on the first refusal.
    pub async fn publish_pipelined(
        &self,
        exchange: &str,
        messages: impl IntoIterator<Item = (String, Vec<u8>, BasicProperties)>,
        window: usize,
    ) -> Result<usize, PublishError> {
        let mut pending = std::collections::VecDeque::new();
        let mut sent = 0;
        for (routing_key, body, properties) in messages {
            let confirm = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    properties.with_delivery_mode(2),
                )
                .await?;
            pending.push_back((routing_key, confirm));
            sent += 1;
            if pending.len() >= window.max(1) {
                let (key, confirm) = pending.pop_front().expect("non-empty");
                check_confirm(exchange, &key, confirm.await?)?;
            }
        }
        for (key, confirm) in pending {
            check_confirm(exchange, &key, confirm.await?)?;
        }
        Ok(sent)
    }
}

fn check_confirm(exchange: &str, routing_key: &str, confirm: lapin::Confirmation) -> Result<(), PublishError> {
    if confirm.is_nack() {
        return Err(PublishError::Nacked);
    }
    if confirm.take_message().is_some() {
        return Err(PublishError::Unroutable { exchange: exchange.to_owned(), routing_key: routing_key.to_owned() });
    }
    Ok(())
}

/// Properties for a new message from a publisher tool.
pub fn new_message_properties(
    message_id: &str,
    content_type: &str,
    headers: impl IntoIterator<Item = (&'static str, String)>,
) -> BasicProperties {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(name.into(), long_string(value));
    }
    let now = chrono::Utc::now();
    table.insert(super::envelope::PUBLISHED_AT_MS.into(), long_string(now.timestamp_millis().to_string()));
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_content_type(content_type.into())
        .with_timestamp(now.timestamp() as u64)
        .with_headers(table)
}

/// How long [`LazyPublisher::publish`] keeps publishing a message again after a broken
/// connection or a nack (a cluster's failover takes a few seconds).
pub const REPUBLISH_FOR: std::time::Duration = std::time::Duration::from_secs(20);

/// A lazily connected, reconnecting confirmed publisher for request handlers (the gateway and
/// the HTTP API's outbound email queue). Requests publish concurrently on one confirm channel;
/// the lock is held only to connect. The topology is declared on connect, so messages are
/// routed to their queues even before a worker has run.
pub struct LazyPublisher {
    amqp_url: String,
    topology: Option<super::topology::Topology>,
    session: tokio::sync::Mutex<Option<Arc<PublisherSession>>>,
}

struct PublisherSession {
    connection: Connection,
    publisher: ConfirmedPublisher,
}

impl LazyPublisher {
    pub fn new(amqp_url: &str) -> Self {
        Self { amqp_url: amqp_url.to_owned(), topology: None, session: tokio::sync::Mutex::new(None) }
    }

    /// Declare `topology` on every (re)connect.
    pub fn declaring(mut self, topology: super::topology::Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    async fn session(&self) -> anyhow::Result<Arc<PublisherSession>> {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_ref().filter(|s| s.publisher.channel().status().connected()) {
            return Ok(session.clone());
        }
        let connection = super::connect(&self.amqp_url, "intake-publisher").await?;
        let publisher = ConfirmedPublisher::open(&connection).await?;
        if let Some(topology) = &self.topology {
            topology.declare(publisher.channel()).await?;
        }
        let session = Arc::new(PublisherSession { connection, publisher });
        *guard = Some(session.clone());
        Ok(session)
    }

    /// Close the connection, if one is open (a short-lived tool before it exits).
    pub async fn close(&self) {
        if let Some(session) = self.session.lock().await.take() {
            super::close_channel(session.publisher.channel()).await;
            super::close_connection(&session.connection).await;
        }
    }

    /// Publish and wait for the confirm. When the connection breaks (or the broker nacks, as a
    /// quorum queue does while it has no leader) before the confirm, the message is published
    /// again on a new connection, to another node if several are configured, for up to
    /// [`REPUBLISH_FOR`]: a message is confirmed at least once or the caller gets the error.
    /// When no node answers at all, the error comes at once (the caller answers 503/451).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            let session = self.session().await?;
            // A node that hangs (instead of closing the connection) must not use up the window.
            let left = REPUBLISH_FOR.saturating_sub(started.elapsed()).max(std::time::Duration::from_secs(1));
            let attempt = session.publisher.publish(exchange, routing_key, body, properties.clone());
            let error = match tokio::time::timeout(left, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e @ PublishError::Unroutable { .. })) => return Err(e.into()),
                Ok(Err(e)) => anyhow::Error::from(e),
                Err(_) => anyhow::anyhow!("no confirm within {}s", left.as_secs()),
            };
            let first_to_see_it = {
                let mut guard = self.session.lock().await;
                let current = guard.as_ref().is_some_and(|current| Arc::ptr_eq(current, &session));
                if current {
                    *guard = None; // reconnect before publishing again
                }
                current
            };
            if started.elapsed() + backoff > REPUBLISH_FOR {
                return Err(error.context(format!("not confirmed within {}s", REPUBLISH_FOR.as_secs())));
            }
            // One warning per broken connection, not one per message that was in flight on it.
            if first_to_see_it {
                tracing::warn!(error = %format!("{error:#}"), "publish not confirmed; reconnecting and publishing again");
            } else {
                tracing::debug!(error = %format!("{error:#}"), "publish not confirmed; publishing again");
            }
            metrics::counter!("intake_republished_total").increment(1);
            tokio::time::sleep(super::nodes::jittered(backoff)).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    }
}
