//! The outbound email queue: send agent replies over SMTP.

use lapin::message::Delivery;
use tracing::Instrument;

use super::{apply_classified, plan_for_update_error, settle_batch, with_backoff, Inflight, Plan, Shared};
use crate::amqp::publish::ConfirmedPublisher;
use crate::smtp::{self, SendError, SendJob};

/// Send agent replies one by one; each ends sent, scheduled for retry, or dead-lettered with
/// the message marked failed.
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
            let Some(result) = with_backoff(shared, || apply_classified(&shared.pool, &requests)).await else {
                return Ok(false);
            };
            if let Err(e) = result {
                item.plan = plan_for_update_error(e);
                continue;
            }
        }
        let span = tracing::info_span!("send", conversation_id = %job.conversation_id, key = %job.message_key);
        item.plan = match mailer.send(&shared.pool, &job).instrument(span).await {
            Ok(_) => {
                metrics::counter!("intake_emails_sent_total").increment(1);
                Plan::Apply(Vec::new())
            }
            Err(SendError::Transient(error)) if item.retries_left(&shared.settings.topology) => {
                let _ = smtp::record_status(&shared.pool, &job, "deferred", Some(error.clone())).await;
                Plan::Retry { reason: "smtp_unavailable", error }
            }
            Err(SendError::Transient(error)) => {
                let _ = smtp::record_failure(&shared.pool, &job, &error).await;
                Plan::Dead { reason: "retries_exhausted", error: format!("smtp_unavailable: {error}") }
            }
            Err(SendError::Permanent(error)) => {
                let _ = smtp::record_failure(&shared.pool, &job, &error).await;
                Plan::Dead { reason: "smtp_rejected", error }
            }
        };
    }
    settle_batch(shared, publisher, &inflight).await?;
    Ok(true)
}
