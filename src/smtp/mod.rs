//! Outbound email: agent replies on email conversations are sent over SMTP (lettre) with
//! threading headers. The message is stored first as *pending*; the conversation's
//! `lastOutboundAt` moves only when the SMTP server accepted it (a `sent` status through the
//! update logic). Failures are retried by the worker's retry path, then dead-lettered with the
//! message marked `failed`.
//!
//! Exactly once: before its SMTP session a sender *claims* the message in one conditional
//! UPDATE (`pending`, or `failed` for a re-send → `sending`, with its owner id and a lease
//! expiry) and stores the Message-ID there, so every attempt reuses it. Only the owner records
//! the result (`sent` once the server accepted, `failed`) or releases the claim for a retry;
//! a job that finds another owner's live lease sends nothing and goes to the retry path, so a
//! claim whose owner died is taken over once its lease expired.

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

    /// How long a sender's claim on a message lasts; another worker sends it only after that
    /// (when the claiming worker died mid-send). At least the SMTP timeout.
    #[arg(long, env = "INTAKE_SMTP_LEASE", default_value = "5m", value_parser = crate::amqp::parse_duration)]
    pub smtp_lease: Duration,
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
    /// A job for a message already stored (pending): what the API queues.
    pub fn for_stored(project_id: &str, conversation_id: Uuid, message_key: &str) -> Self {
        SendJob {
            project_id: project_id.to_owned(),
            conversation_id,
            message_key: message_key.to_owned(),
            body: None,
            subject: None,
            sender_display_name: None,
        }
    }

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
    /// Another sender holds a live claim on the message: try again later (after its lease
    /// expired, if that sender died).
    #[error("{0}")]
    InProgress(String),
    /// Will not work as it is (5xx, no recipient, not an email conversation).
    #[error("{0}")]
    Permanent(String),
    /// The database failed before anything was sent: the environment's fault, not the
    /// message's; the worker retries without using up the job's attempts.
    #[error("{0}")]
    Database(String),
}

/// What the worker knows about the job being sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// A `failed` message may be claimed again (a dead-lettered job replayed on purpose).
    pub resend_failed: bool,
    /// No retry follows: a transient failure marks the message `failed`.
    pub last_attempt: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The SMTP server accepted the mail. `recorded`: this sender still owned the claim and
    /// recorded it as sent (false when another sender took over its expired claim, or the
    /// database stayed unreachable until the claim expired).
    Sent { message_id: String, recorded: bool },
    /// Nothing sent (a duplicate or redelivered job): `already_sent`, `failed` (a failed
    /// message is sent again only by a replay or the resend API) or `not_pending` (not a
    /// message intake delivers).
    Skipped { reason: &'static str },
}

/// A message this sender claimed: its row id, the Message-ID every attempt uses, and (a
/// little before) when the lease runs out.
struct Claim {
    id: Uuid,
    message_id: String,
    until: tokio::time::Instant,
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Owner id written on claims: host, process and this mailer.
    owner: String,
    lease: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("owner", &self.owner).field("lease", &self.lease).finish_non_exhaustive()
    }
}

fn db(e: sqlx::Error) -> SendError {
    SendError::Database(format!("database: {e}"))
}

impl Mailer {
    pub fn from_args(args: &SmtpArgs) -> anyhow::Result<Option<Self>> {
        let Some(url) = &args.smtp_url else { return Ok(None) };
        anyhow::ensure!(
            args.smtp_lease >= args.smtp_timeout,
            "INTAKE_SMTP_LEASE ({:?}) must be at least INTAKE_SMTP_TIMEOUT ({:?})",
            args.smtp_lease,
            args.smtp_timeout
        );
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("INTAKE_SMTP_URL: {e}"))?
            .timeout(Some(args.smtp_timeout))
            .build();
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "intake".into());
        let owner = format!("{host}:{}:{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        Ok(Some(Mailer { transport, owner, lease: args.smtp_lease }))
    }

    /// The id this sender writes on its claims.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claim the message of `job`, send it, and record the result; see the module docs.
    pub async fn send(&self, pool: &PgPool, job: &SendJob, options: SendOptions) -> Result<SendOutcome, SendError> {
        let row: Option<PendingRow> = sqlx::query_as(
            "SELECT m.id, m.delivery_state, m.body, m.subject, c.subject AS conversation_subject,
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
        match row.delivery_state.as_deref() {
            Some("pending" | "sending") => {}
            Some("failed") if options.resend_failed => {}
            state => return Ok(SendOutcome::Skipped { reason: skip_reason(state) }),
        }
        let mailbox_address = row.external_channel_id.clone().unwrap_or_default();
        let domain = mailbox_address.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_else(|| "localhost".into());
        let claim = match self.claim(pool, row.id, &domain, options).await? {
            Ok(claim) => claim,
            Err(reason) => return Ok(SendOutcome::Skipped { reason }),
        };
        if row.delivery_state.as_deref() == Some("sending") {
            tracing::warn!(key = %job.message_key, "took over the expired claim of a sender that did not finish");
        }

        let message_id = claim.message_id.clone();
        let email = match self.prepare(pool, job, &row, &mailbox_address, &message_id).await {
            Ok(email) => email,
            Err(e) => return Err(self.settle_error(pool, job, &claim, e, options).await),
        };
        // The whole session within the claim (lettre's timeout is per network operation): past
        // it another sender may take the message over.
        let session = tokio::time::timeout_at(claim.until, self.transport.send(email)).await;
        let Ok(session) = session else {
            let e = SendError::Transient("the SMTP session outlasted the claim's lease".into());
            return Err(self.settle_error(pool, job, &claim, e, options).await);
        };
        match session {
            Ok(response) => {
                let detail = format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "));
                // The server has the mail: keep trying to record it until the database answers
                // (a retry would send it again; `settle` checks the claim is still ours, so
                // recording after the lease ran out is safe).
                let mut delay = Duration::from_millis(100);
                let recorded = loop {
                    match self.settle(pool, job, &claim, STATUS_SENT, Some(detail.clone())).await {
                        Ok(recorded) => break recorded,
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in = ?delay, "could not record the sent email yet");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                    }
                };
                if recorded {
                    tracing::info!(conversation_id = %job.conversation_id, key = %job.message_key, %message_id, "email sent");
                } else {
                    tracing::warn!(conversation_id = %job.conversation_id, key = %job.message_key, %message_id,
                        "email sent, but not recorded by this sender (its claim expired or was taken over)");
                }
                Ok(SendOutcome::Sent { message_id, recorded })
            }
            Err(e) if e.is_permanent() => {
                let e = SendError::Permanent(format!("SMTP server refused the message: {e}"));
                Err(self.settle_error(pool, job, &claim, e, options).await)
            }
            Err(e) => {
                let e = SendError::Transient(format!("SMTP: {e}"));
                Err(self.settle_error(pool, job, &claim, e, options).await)
            }
        }
    }

    /// `pending` (or `failed`, for a re-send, or `sending` under an expired lease or this
    /// sender's own — it sends one job at a time, so that is an earlier attempt of its own that
    /// failed before the SMTP session) → `sending` owned by this sender, with the Message-ID
    /// stored; one conditional UPDATE.
    async fn claim(
        &self,
        pool: &PgPool,
        id: Uuid,
        domain: &str,
        options: SendOptions,
    ) -> Result<Result<Claim, &'static str>, SendError> {
        let generated = format!("{}@{domain}", Uuid::new_v4());
        let until = tokio::time::Instant::now() + self.lease;
        let claimed: Option<String> = sqlx::query_scalar(
            "UPDATE messages SET delivery_state = 'sending', delivery_owner = $2,
                    delivery_lease_until = now() + make_interval(secs => $3),
                    external_id = coalesce(external_id, $4)
              WHERE id = $1
                AND (delivery_state = 'pending'
                     OR (delivery_state = 'failed' AND $5)
                     OR (delivery_state = 'sending' AND (delivery_lease_until <= now() OR delivery_owner = $2)))
              RETURNING external_id",
        )
        .bind(id)
        .bind(&self.owner)
        .bind(self.lease.as_secs_f64())
        .bind(&generated)
        .bind(options.resend_failed)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
        if let Some(message_id) = claimed {
            return Ok(Ok(Claim { id, message_id, until }));
        }
        // Not claimable (any more): why?
        let (state, owner, until): (Option<String>, Option<String>, Option<chrono::DateTime<Utc>>) =
            sqlx::query_as("SELECT delivery_state, delivery_owner, delivery_lease_until FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db)?
                .unwrap_or_default();
        match state.as_deref() {
            Some("sending") => Err(SendError::InProgress(format!(
                "being sent by {} (claim until {})",
                owner.unwrap_or_default(),
                until.map(|t| t.to_rfc3339()).unwrap_or_default()
            ))),
            Some("pending") => Err(SendError::InProgress("the claim changed hands meanwhile".into())),
            state => Ok(Err(skip_reason(state))),
        }
    }

    /// The email for a claimed message, threaded to the conversation.
    async fn prepare(
        &self,
        pool: &PgPool,
        job: &SendJob,
        row: &PendingRow,
        mailbox_address: &str,
        message_id: &str,
    ) -> Result<Message, SendError> {
        if row.channel_type.as_deref() != Some("email") {
            return Err(SendError::Permanent("the conversation was not opened through an email entry point".into()));
        }
        let customer = row
            .user_primary_email
            .clone()
            .ok_or_else(|| SendError::Permanent("the conversation has no customer email address".into()))?;
        let thread: Vec<(String, String)> = sqlx::query_as(
            "SELECT coalesce(external_id, idempotency_key), direction FROM messages
              WHERE conversation_id = $1 AND id <> $2
                -- only mails that went out or came in: no unsent replies
                AND coalesce(delivery_state, 'sent') = 'sent'
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
        build_email(row, mailbox_address, &customer, message_id, &thread, job.conversation_id)
            .map_err(SendError::Permanent)
    }

    /// Record `status` (sent, failed, or deferred: the claim goes back to pending for a
    /// retry) through the update logic, only while this sender owns the claim; false when it
    /// does not (its lease expired and another sender claimed the message).
    async fn settle(
        &self,
        pool: &PgPool,
        job: &SendJob,
        claim: &Claim,
        status: &str,
        detail: Option<String>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = pool.begin().await?;
        // The update logic's lock order: the conversation, then the message.
        sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND project_id = $2 FOR UPDATE")
            .bind(job.conversation_id)
            .bind(&job.project_id)
            .execute(&mut *tx)
            .await?;
        let owned: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM messages WHERE id = $1 AND delivery_state = 'sending' AND delivery_owner = $2 FOR UPDATE",
        )
        .bind(claim.id)
        .bind(&self.owner)
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_none() {
            return Ok(false);
        }
        if status != STATUS_SENT && status != STATUS_FAILED {
            sqlx::query(
                "UPDATE messages SET delivery_state = 'pending', delivery_owner = NULL, delivery_lease_until = NULL
                  WHERE id = $1",
            )
            .bind(claim.id)
            .execute(&mut *tx)
            .await?;
        }
        // Sent and failed end the claim in the update logic (`settle_pending`).
        match update::apply_in(&mut tx, &status_request(job, status, detail)).await {
            Ok(_) => {}
            Err(update::UpdateError::Database(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "could not record the delivery status");
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Settle a claimed message after `error`: a transient error releases the claim for the
    /// retry (or, on the last attempt, marks the message failed); a permanent one marks it
    /// failed.
    async fn settle_error(
        &self,
        pool: &PgPool,
        job: &SendJob,
        claim: &Claim,
        error: SendError,
        options: SendOptions,
    ) -> SendError {
        let (status, detail) = match &error {
            // Released for the retry; a database failure is never the message's.
            SendError::Transient(e) if !options.last_attempt => (STATUS_DEFERRED, e),
            SendError::Database(e) => (STATUS_DEFERRED, e),
            SendError::Transient(e) | SendError::Permanent(e) | SendError::InProgress(e) => (STATUS_FAILED, e),
        };
        if let Err(e) = self.settle(pool, job, claim, status, Some(detail.clone())).await {
            // The claim stays; it expires with its lease and the retry (or a replay) takes it.
            tracing::warn!(error = %e, status, "could not record the delivery status; the claim expires by itself");
        }
        error
    }
}

/// Why a job for a message in `state` sends nothing.
fn skip_reason(state: Option<&str>) -> &'static str {
    match state {
        Some("sent") => "already_sent",
        Some("failed") => "failed",
        _ => "not_pending",
    }
}

/// A transient failure recorded on the message while it waits for its retry.
pub const STATUS_DEFERRED: &str = "deferred";

fn status_request(job: &SendJob, status: &str, detail: Option<String>) -> UpdateRequest {
    UpdateRequest {
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
    }
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: Uuid,
    delivery_state: Option<String>,
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
        let ids: Vec<&str> = thread.iter().map(|(id, _)| id.as_str()).collect();
        let references: Vec<String> = capped_references(&ids).iter().map(|id| format!("<{id}>")).collect();
        builder = builder.references(references.join(" "));
    }
    builder.header(ContentType::TEXT_PLAIN).body(row.body.clone()).map_err(|e| format!("cannot build the email: {e}"))
}

/// The `References` of a reply to `thread` (oldest first): at most
/// [`MAX_REFERENCES`](intake_adapters::email::MAX_REFERENCES) ids, the inbound cap, keeping the
/// first (the thread's root) and the newest ones, as RFC 5322 (3.6.4) suggests when trimming.
pub fn capped_references<'a>(thread: &[&'a str]) -> Vec<&'a str> {
    let max = intake_adapters::email::MAX_REFERENCES;
    if thread.len() <= max {
        return thread.to_vec();
    }
    std::iter::once(thread[0]).chain(thread[thread.len() - (max - 1)..].iter().copied()).collect()
}

/// Record a delivery status on the message through the update logic (no claim involved).
pub async fn record_status(
    pool: &PgPool,
    job: &SendJob,
    status: &str,
    detail: Option<String>,
) -> Result<(), sqlx::Error> {
    let request = status_request(job, status, detail);
    match update::apply(pool, &request).await {
        Ok(_) => Ok(()),
        Err(update::UpdateError::Database(e)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not record the delivery status");
            Ok(())
        }
    }
}

/// What a resend request found.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// The message is pending (again): queue a job for it.
    Ready,
    NotFound,
    /// Not an outbound message intake delivers, or sending or sent already; the state.
    NotResendable(Option<String>),
}

/// Make a `failed` outbound email message `pending` again (a `pending` one stays so) for a
/// resend; it keeps its Message-ID. The caller queues the job.
pub async fn prepare_resend(
    pool: &PgPool,
    project_id: &str,
    conversation_id: Uuid,
    key: &str,
) -> Result<Resend, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let conversation: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = $1 AND project_id = $2 FOR UPDATE")
            .bind(conversation_id)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
    if conversation.is_none() {
        return Ok(Resend::NotFound);
    }
    let message: Option<(Uuid, String, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, direction, delivery_state, coalesce(delivery_lease_until <= now(), false) FROM messages
          WHERE conversation_id = $1 AND project_id = $2 AND idempotency_key = $3 FOR UPDATE",
    )
    .bind(conversation_id)
    .bind(project_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, direction, state, lease_expired)) = message else { return Ok(Resend::NotFound) };
    // Failed, or claimed by a sender that died (its lease ran out): send it again.
    let resendable = match state.as_deref() {
        Some("failed") => true,
        Some("sending") => lease_expired,
        _ => false,
    };
    match (direction.as_str(), state.as_deref()) {
        ("outbound", Some("pending")) => Ok(Resend::Ready),
        ("outbound", _) if resendable => {
            sqlx::query(
                "UPDATE messages SET delivery_state = 'pending', delivery_owner = NULL, delivery_lease_until = NULL
                  WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let job = SendJob::for_stored(project_id, conversation_id, key);
            let request = status_request(&job, "pending", Some("resend requested".into()));
            match update::apply_in(&mut tx, &request).await {
                Ok(_) => {}
                Err(update::UpdateError::Database(e)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "could not record the delivery status"),
            }
            tx.commit().await?;
            Ok(Resend::Ready)
        }
        _ => Ok(Resend::NotResendable(state)),
    }
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
