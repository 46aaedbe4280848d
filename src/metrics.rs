//! Prometheus metrics. One recorder per process, installed on first use.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::update::Effect;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle (installs the recorder the first time).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let seconds = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let sizes = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), seconds)
            .expect("static buckets")
            .set_buckets_for_metric(Matcher::Full("intake_batch_size".into()), sizes)
            .expect("static buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Tests may build several apps in one process; the first recorder wins.
        if metrics::set_global_recorder(recorder).is_ok() {
            export_documented_at_zero();
        }
        handle
    })
}

/// The adapter keys intake ships (their counters exist from the start).
const ADAPTERS: &[&str] = &["email", "slack", "telegram", "whatsapp", "twilio-sms", "webhook"];
const EFFECTS: &[Effect] =
    &[Effect::Appended, Effect::Duplicate, Effect::MessageChanged, Effect::AttributesChanged, Effect::Parked];
/// Reasons a message goes to the retry queues, and the adapter that can have it.
const RETRY_REASONS: &[(&str, Option<&str>)] =
    &[("unknown_message", None), ("smtp_unavailable", Some("email")), ("send_in_progress", Some("email"))];
/// The dead-letter reasons the README lists.
const DEAD_REASONS: &[&str] = &[
    "malformed_payload",
    "unknown_entry_point",
    "missing_entry_point",
    "ambiguous_entry_point",
    "unknown_adapter",
    "payload_too_large",
    "database_rejected",
    "field_too_long",
    "idempotency_key_reused",
    "retries_exhausted",
];
const EMAIL_SKIP_REASONS: &[&str] = &["already_sent", "failed", "not_pending"];

/// Every documented metric gets its series at zero when the recorder is installed, so a fresh
/// process exports them and the first increment is a visible change (`rate()` and
/// `increase()` miss the first count of a series that appears with it). Labelled metrics start
/// with their known label values: the adapters intake ships, the effects, the documented
/// reasons.
fn export_documented_at_zero() {
    for name in [
        "intake_transient_failures_total",
        "intake_worker_reconnects_total",
        "intake_republished_total",
        "intake_parked_applied_total",
        "intake_parked_expired_total",
        "intake_emails_sent_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    // Registered histograms are exported with zero counts.
    let _ = metrics::histogram!("intake_batch_size");
    let _ = metrics::histogram!("intake_apply_duration_seconds");
    metrics::gauge!("intake_parked_updates").set(0.0);
    metrics::gauge!("intake_parked_oldest_age_seconds").set(0.0);
    for effect in EFFECTS {
        metrics::counter!("intake_api_updates_total", "effect" => effect_label(*effect)).increment(0);
    }
    for &adapter in ADAPTERS {
        metrics::counter!("intake_messages_consumed_total", "adapter" => adapter).increment(0);
        metrics::counter!("intake_messages_skipped_total", "adapter" => adapter).increment(0);
        let _ = metrics::histogram!("intake_publish_to_commit_seconds", "adapter" => adapter);
        for effect in EFFECTS {
            metrics::counter!("intake_messages_applied_total", "adapter" => adapter, "effect" => effect_label(*effect))
                .increment(0);
        }
        for &(reason, only) in RETRY_REASONS {
            if only.is_none_or(|a| a == adapter) {
                metrics::counter!("intake_messages_retried_total", "adapter" => adapter, "reason" => reason)
                    .increment(0);
            }
        }
        for &reason in DEAD_REASONS {
            metrics::counter!("intake_messages_dead_lettered_total", "adapter" => adapter, "reason" => reason)
                .increment(0);
        }
    }
    for &reason in EMAIL_SKIP_REASONS {
        metrics::counter!("intake_email_jobs_skipped_total", "reason" => reason).increment(0);
    }
}

pub fn effect_label(effect: Effect) -> &'static str {
    match effect {
        Effect::Appended => "appended",
        Effect::Duplicate => "duplicate",
        Effect::MessageChanged => "message_changed",
        Effect::AttributesChanged => "attributes_changed",
        Effect::Parked => "parked",
    }
}

pub fn record_api_update(effect: Effect) {
    metrics::counter!("intake_api_updates_total", "effect" => effect_label(effect)).increment(1);
}
