//! The outbound email queue: send agent replies over SMTP.

use lapin::message::Delivery;
use tracing::Instrument;

use super::batch::SUSPECT_RETRIES;
use super::{apply_classified, plan_for_update_error, settle_batch, with_backoff, Inflight, Plan, Shared, Transient};
use crate::amqp::publish::ConfirmedPublisher;
use crate::amqp::{envelope, header_string};
use crate::smtp::{SendError, SendJob, SendOptions, SendOutcome};

/// Send agent replies one by one; each ends sent, skipped (already sent: a duplicate job),
/// scheduled for retry, or dead-lettered (the message marked failed unless another sender
/// still holds its claim).
pub(super) async fn process_outbound(
    shared: &Shared,
    queue: &str,
    publisher: &ConfirmedPublisher,
    batch: Vec<Delivery>,
) -> anyhow::Result<bool> {
    let mailer = shared.settings.mailer.as_ref().expect("outbound queue is consumed only with a mailer");
    let mut inflight: Vec<Inflight> = batch.into_iter().map(|d| Inflight::new(d, queue)).collect();
    for item in &mut inflight {
        let job: SendJob = match serde_json::from_slice(&item.delivery.data) {
            Ok(job) => job,
            Err(e) => {
                item.plan = Plan::Dead { reason: "malformed_payload", error: format!("outbound email job: {e}") };
                continue;
            }
        };
        if let Some(request) = job.append_request() {
            let requests = [request];
            let suspect = std::sync::atomic::AtomicU32::new(SUSPECT_RETRIES);
            let Some(result) = with_backoff(shared, || apply_classified(&shared.pool, &requests, &suspect)).await
            else {
                return Ok(false);
            };
            if let Err(e) = result {
                item.plan = plan_for_update_error(e);
                continue;
            }
        }
        // A replayed dead letter is a deliberate re-send: it may claim a `failed` message.
        let replayed = header_string(item.delivery.properties.headers().as_ref(), envelope::REPLAYED).is_some();
        let options =
            SendOptions { resend_failed: replayed, last_attempt: !item.retries_left(&shared.settings.topology) };
        let span = tracing::info_span!("send", conversation_id = %job.conversation_id, key = %job.message_key);
        // A database failure before the SMTP session is the environment's: retried here, the
        // delivery unacked, without using up the job's attempts.
        let sent = with_backoff(shared, || async {
            match mailer.send(&shared.pool, &job, options).instrument(span.clone()).await {
                Err(SendError::Database(e)) => Err(Transient(e)),
                other => Ok(other),
            }
        })
        .await;
        let Some(sent) = sent else { return Ok(false) };
        item.plan = match sent {
            Ok(SendOutcome::Sent { .. }) => {
                // Counted only when the SMTP server accepted the mail.
                metrics::counter!("intake_emails_sent_total").increment(1);
                Plan::Apply(Vec::new())
            }
            Ok(SendOutcome::Skipped { reason }) => {
                tracing::info!(conversation_id = %job.conversation_id, key = %job.message_key, reason, "email job skipped");
                metrics::counter!("intake_email_jobs_skipped_total", "reason" => reason).increment(1);
                Plan::Skip
            }
            // The sender recorded `deferred` (released its claim) or, on the last attempt, `failed`.
            Err(SendError::Transient(error)) if !options.last_attempt => {
                Plan::Retry { reason: "smtp_unavailable", error }
            }
            Err(SendError::Transient(error)) => {
                Plan::Dead { reason: "retries_exhausted", error: format!("smtp_unavailable: {error}") }
            }
            // Another sender holds a live claim: nothing sent, nothing recorded. Retry, so that
            // the message is sent once that sender's lease expires if it died.
            Err(SendError::InProgress(error)) if !options.last_attempt => {
                Plan::Retry { reason: "send_in_progress", error }
            }
            Err(SendError::InProgress(error)) => {
                Plan::Dead { reason: "retries_exhausted", error: format!("send_in_progress: {error}") }
            }
            Err(SendError::Permanent(error)) => Plan::Dead { reason: "smtp_rejected", error },
            Err(SendError::Database(_)) => unreachable!("retried above"),
        };
    }
    settle_batch(shared, publisher, &inflight).await?;
    Ok(true)
}
