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
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
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
