//! Publishing send jobs on the outbound email queue.

use super::job::SendJob;

/// Hands send jobs to the outbound email queue (used by the HTTP API).
pub struct OutboundQueue {
    pub exchange: String,
    pub publisher: std::sync::Arc<crate::amqp::publish::LazyPublisher>,
}

impl OutboundQueue {
    pub async fn enqueue(&self, adapter_key: &str, job: &SendJob) -> anyhow::Result<()> {
        let body = serde_json::to_vec(job)?;
        let properties = crate::amqp::publish::new_message_properties(
            &format!("{}:{}", job.conversation_id, job.message_key),
            "application/json",
            [(crate::amqp::envelope::ADAPTER, adapter_key.to_owned())],
        );
        let routing_key = format!("email.{adapter_key}.outbound");
        self.publisher.publish(&self.exchange, &routing_key, &body, properties).await
    }
}
