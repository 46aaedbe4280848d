//! The health gauges on `/metrics`: a loop samples the [`Overview`] every
//! `INTAKE_HEALTH_SAMPLE_EVERY` and sets them.
//!
//! | gauge | labels | value |
//! |---|---|---|
//! | `intake_queue_depth` | `queue` | ready messages |
//! | `intake_queue_unacked` | `queue` | delivered, not yet acked (management API) |
//! | `intake_queue_consumers` | `queue` | consumers |
//! | `intake_queue_lag_seconds` | `queue` | age of the oldest ready message (management API) |
//! | `intake_dead_letters` | `reason`, `adapter` | dead letters (of the first `intake_dead_letters_scanned`) |
//! | `intake_dead_letters_scanned` | — | dead letters the counts looked at |
//! | `intake_parked_updates` | — | parked updates |
//! | `intake_entry_point_last_ingest_timestamp_seconds` | `entry_point_id`, `project`, `channel_type`, `external_channel_id` | Unix time of the last applied message |
//! | `intake_worker_instances` | — | workers whose heartbeat is under a minute old |

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Overview, Sampler};

/// How often the gauges are sampled by default.
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Label sets set before, so that one that disappears is set to zero (a dead-letter reason
/// that was purged) or NaN (a lag no longer known) instead of keeping a stale value.
#[derive(Default)]
pub struct Exported {
    dead: HashSet<(String, String)>,
    lag: HashSet<String>,
}

impl Exported {
    /// Set every gauge from `overview`.
    pub fn set(&mut self, overview: &Overview) {
        let queues = overview.queues.iter().chain(&overview.retry_queues).chain(overview.dead_queue.as_ref());
        let mut lag = HashSet::new();
        for q in queues {
            let queue = q.name.clone();
            metrics::gauge!("intake_queue_depth", "queue" => queue.clone()).set(q.ready as f64);
            metrics::gauge!("intake_queue_consumers", "queue" => queue.clone()).set(q.consumers as f64);
            if let Some(unacked) = q.unacked {
                metrics::gauge!("intake_queue_unacked", "queue" => queue.clone()).set(unacked as f64);
            }
            if let Some(age) = q.oldest_age_secs {
                metrics::gauge!("intake_queue_lag_seconds", "queue" => queue.clone()).set(age);
                lag.insert(queue);
            }
        }
        for gone in self.lag.difference(&lag) {
            metrics::gauge!("intake_queue_lag_seconds", "queue" => gone.clone()).set(f64::NAN);
        }
        self.lag = lag;

        let mut dead = HashSet::new();
        for d in &overview.dead_letters {
            let key = (d.reason.clone(), d.adapter.clone());
            metrics::gauge!("intake_dead_letters", "reason" => key.0.clone(), "adapter" => key.1.clone())
                .set(d.count as f64);
            dead.insert(key);
        }
        for (reason, adapter) in self.dead.difference(&dead) {
            metrics::gauge!("intake_dead_letters", "reason" => reason.clone(), "adapter" => adapter.clone()).set(0.0);
        }
        self.dead = dead;
        metrics::gauge!("intake_dead_letters_scanned").set(overview.dead_scanned as f64);

        metrics::gauge!("intake_parked_updates").set(overview.parked as f64);
        for e in &overview.last_ingest {
            let Some(at) = e.last_ingest_at else { continue };
            metrics::gauge!(
                "intake_entry_point_last_ingest_timestamp_seconds",
                "entry_point_id" => e.entry_point_id.to_string(),
                "project" => e.project_id.clone(),
                "channel_type" => e.channel_type.clone(),
                "external_channel_id" => e.external_channel_id.clone()
            )
            .set(at.timestamp_millis() as f64 / 1000.0);
        }
        metrics::gauge!("intake_worker_instances").set(overview.workers.len() as f64);
    }
}

/// Sample every `every` and set the gauges, until `stop`. The first sample is taken at once.
pub async fn run(sampler: Arc<Sampler>, every: Duration, stop: CancellationToken) {
    crate::metrics::handle();
    let mut exported = Exported::default();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        // Not cut short by `stop`: a sample ends by itself (every request has a timeout) and
        // closes the channels it opened.
        let overview = sampler.sample().await;
        exported.set(&overview);
        // Say each new problem once, not every sample.
        for w in overview.warnings.iter().filter(|w| !warned.contains(w)) {
            tracing::warn!(warning = %w, "health sampling");
        }
        warned = overview.warnings;
    }
}
