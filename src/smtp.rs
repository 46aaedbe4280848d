//! Outbound email: agent replies on email conversations are sent over SMTP (lettre) with
//! threading headers. The message is stored first as *pending*; the conversation's
//! `lastOutboundAt` moves only when the SMTP server accepted it (a `sent` status through the
//! update logic). Failures are retried by the worker's retry path, then dead-lettered with the
//! message marked `failed`.

use std::time::Duration;

use chrono::Utc;
use clap::Args;
use intake_adapters::UpdateAction;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::update::{self, MessageExtras, Target, UpdateRequest, STATUS_FAILED, STATUS_SENT};

#[derive(Debug, Clone, Args)]
pub struct SmtpArgs {
    /// SMTP server for outbound email, e.g. `smtp://user:pass@mail.example.com:587?tls=required`,
    /// `smtps://…:465` (implicit TLS) or `smtp://127.0.0.1:2525` (plain, local relays only).
    /// Unset: intake does not send email; outbound messages are recorded as they come.
    #[arg(long, env = "INTAKE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Give up on one SMTP conversation after this long.
    #[arg(long, env = "INTAKE_SMTP_TIMEOUT", default_value = "30s", value_parser = crate::amqp::parse_duration)]
    pub smtp_timeout: Duration,
}

/// A queued request to send an agent reply (body of `email.<adapterKey>.outbound` messages).
/// The HTTP API queues jobs for messages it already stored; integrations may instead send
/// `body` (and `subject`, `senderDisplayName`) and the worker stores the message first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendJob {
    pub project_id: String,
    pub conversation_id: Uuid,
    /// Idempotency key of the message.
    pub message_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_display_name: Option<String>,
}

impl SendJob {
    /// The pending message a job with a body carries, as an update.
    pub fn append_request(&self) -> Option<UpdateRequest> {
        let body = self.body.clone()?;
        Some(UpdateRequest {
            project_id: self.project_id.clone(),
            target: Target::Conversation(self.conversation_id),
            action: Some(UpdateAction::Append(intake_adapters::NormalizedMessage {
                idempotency_key: self.message_key.clone(),
                direction: intake_adapters::Direction::Outbound,
                sender: intake_adapters::Sender {
                    display_name: self.sender_display_name.clone(),
                    ..Default::default()
                },
                subject: self.subject.clone(),
                body,
                attachments: vec![],
                occurred_at: Utc::now(),
                is_auto_reply: false,
                metadata: Default::default(),
                fingerprint: None,
            })),
            extras: MessageExtras { pending_delivery: true, reject_reused_key: true, ..Default::default() },
            attributes: Default::default(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (connection refused, 4xx).
    #[error("{0}")]
    Transient(String),
    /// Will not work as it is (5xx, no recipient, not an email conversation).
    #[error("{0}")]
    Permanent(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Sent {
        message_id: String,
    },
    /// Already sent or failed before: nothing done (a redelivered job).
    AlreadySettled,
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailer")
    }
}

impl Mailer {
    pub fn from_args(args: &SmtpArgs) -> anyhow::Result<Option<Self>> {
        let Some(url) = &args.smtp_url else { return Ok(None) };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("INTAKE_SMTP_URL: {e}"))?
            .timeout(Some(args.smtp_timeout))
            .build();
        Ok(Some(Mailer { transport }))
    }

    /// Send the pending message of `job` and record the result.
    pub async fn send(&self, pool: &PgPool, job: &SendJob) -> Result<SendOutcome, SendError> {
        let db = |e: sqlx::Error| SendError::Transient(format!("database: {e}"));
        let row: Option<PendingRow> = sqlx::query_as(
            "SELECT m.id, m.delivery_state, m.external_id, m.body, m.subject, c.subject AS conversation_subject,
                    c.user_primary_email, c.user_display_name, ep.channel_type, ep.external_channel_id,
                    m.sender_display_name
               FROM messages m
               JOIN conversations c ON c.id = m.conversation_id
               LEFT JOIN entry_points ep ON ep.id = c.origin_entry_point_id
              WHERE m.project_id = $1 AND m.conversation_id = $2 AND m.idempotency_key = $3",
        )
        .bind(&job.project_id)
        .bind(job.conversation_id)
        .bind(&job.message_key)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
        let row =
            row.ok_or_else(|| SendError::Permanent(format!("no message `{}` in that conversation", job.message_key)))?;
        if row.delivery_state.as_deref() != Some("pending") {
            return Ok(SendOutcome::AlreadySettled);
        }
        if row.channel_type.as_deref() != Some("email") {
            return Err(SendError::Permanent("the conversation was not opened through an email entry point".into()));
        }
        let mailbox_address = row.external_channel_id.clone().unwrap_or_default();
        let customer = row
            .user_primary_email
            .clone()
            .ok_or_else(|| SendError::Permanent("the conversation has no customer email address".into()))?;
        let domain = mailbox_address.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_else(|| "localhost".into());

        // The Message-ID is stored before sending, so a resend reuses it and the customer's
        // reply threads even if recording the send fails.
        let message_id = match &row.external_id {
            Some(id) => id.clone(),
            None => {
                let id = format!("{}@{domain}", Uuid::new_v4());
                sqlx::query("UPDATE messages SET external_id = $2 WHERE id = $1 AND external_id IS NULL")
                    .bind(row.id)
                    .bind(&id)
                    .execute(pool)
                    .await
                    .map_err(db)?;
                id
            }
        };
        let thread: Vec<(String, String)> = sqlx::query_as(
            "SELECT coalesce(external_id, idempotency_key), direction FROM messages
              WHERE conversation_id = $1 AND id <> $2
                -- only ids shaped like a Message-ID belong in References
                AND coalesce(external_id, idempotency_key) LIKE '%_@_%'
                AND coalesce(external_id, idempotency_key) NOT LIKE '% %'
              ORDER BY occurred_at, idempotency_key",
        )
        .bind(job.conversation_id)
        .bind(row.id)
        .fetch_all(pool)
        .await
        .map_err(db)?;

        let email = build_email(&row, &mailbox_address, &customer, &message_id, &thread, job.conversation_id)
            .map_err(SendError::Permanent)?;
        match self.transport.send(email).await {
            Ok(response) => {
                let detail = format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "));
                record_status(pool, job, STATUS_SENT, Some(detail)).await.map_err(db)?;
                tracing::info!(conversation_id = %job.conversation_id, key = %job.message_key, %message_id, "email sent");
                Ok(SendOutcome::Sent { message_id })
            }
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP server refused the message: {e}"))),
            Err(e) => Err(SendError::Transient(format!("SMTP: {e}"))),
        }
    }
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: Uuid,
    delivery_state: Option<String>,
    external_id: Option<String>,
    body: String,
    subject: Option<String>,
    conversation_subject: Option<String>,
    user_primary_email: Option<String>,
    user_display_name: Option<String>,
    channel_type: Option<String>,
    external_channel_id: Option<String>,
    sender_display_name: Option<String>,
}

fn build_email(
    row: &PendingRow,
    mailbox: &str,
    customer: &str,
    message_id: &str,
    thread: &[(String, String)],
    conversation_id: Uuid,
) -> Result<Message, String> {
    let from_address = mailbox.parse().map_err(|e| format!("entry point mailbox `{mailbox}`: {e}"))?;
    let from = Mailbox::new(row.sender_display_name.clone(), from_address);
    let to_address = customer.parse().map_err(|e| format!("customer address `{customer}`: {e}"))?;
    let to = Mailbox::new(row.user_display_name.clone(), to_address);
    // Replies come back with the conversation id as a plus-address token.
    let reply_to = match mailbox.split_once('@') {
        Some((local, domain)) => format!("{local}+{conversation_id}@{domain}")
            .parse()
            .map(|a| Mailbox::new(row.sender_display_name.clone(), a))
            .ok(),
        None => None,
    };
    let base = row.subject.clone().or_else(|| row.conversation_subject.clone()).unwrap_or_default();
    let subject =
        if base.is_empty() || base.to_ascii_lowercase().starts_with("re:") { base } else { format!("Re: {base}") };
    let mut builder = Message::builder().from(from).to(to).subject(subject).message_id(Some(format!("<{message_id}>")));
    if let Some(reply_to) = reply_to {
        builder = builder.reply_to(reply_to);
    }
    if let Some((last_inbound, _)) = thread.iter().rev().find(|(_, direction)| direction == "inbound") {
        builder = builder.in_reply_to(format!("<{last_inbound}>"));
    }
    if !thread.is_empty() {
        let references: Vec<String> = thread.iter().map(|(id, _)| format!("<{id}>")).collect();
        builder = builder.references(references.join(" "));
    }
    builder.header(ContentType::TEXT_PLAIN).body(row.body.clone()).map_err(|e| format!("cannot build the email: {e}"))
}

/// Record a delivery status on the message through the update logic.
pub async fn record_status(
    pool: &PgPool,
    job: &SendJob,
    status: &str,
    detail: Option<String>,
) -> Result<(), sqlx::Error> {
    let request = UpdateRequest {
        project_id: job.project_id.clone(),
        target: Target::Conversation(job.conversation_id),
        action: Some(UpdateAction::Status {
            idempotency_key: job.message_key.clone(),
            status: status.into(),
            at: Utc::now(),
            detail,
        }),
        extras: MessageExtras::default(),
        attributes: Default::default(),
    };
    match update::apply(pool, &request).await {
        Ok(_) => Ok(()),
        Err(update::UpdateError::Database(e)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not record the delivery status");
            Ok(())
        }
    }
}

/// Mark the message as failed (after the last retry or a permanent refusal).
pub async fn record_failure(pool: &PgPool, job: &SendJob, error: &str) -> Result<(), sqlx::Error> {
    record_status(pool, job, STATUS_FAILED, Some(error.to_owned())).await
}

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
