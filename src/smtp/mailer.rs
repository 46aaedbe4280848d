//! The SMTP sender: claims a pending message, sends it once, and records the result while it
//! still owns the claim (the protocol is described in the [`crate::smtp`] docs).

use std::time::Duration;

use chrono::Utc;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::PgPool;
use uuid::Uuid;

use super::compose::{build_email, PendingRow};
use super::job::{SendError, SendJob, SendOptions, SendOutcome};
use super::status::{status_request, STATUS_DEFERRED};
use super::SmtpArgs;
use crate::update::{self, STATUS_FAILED, STATUS_SENT};

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

    /// Claim the message of `job`, send it, and record the result; see the [`crate::smtp`] docs.
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
