//! Shared driver of the adapter fuzz targets: decode one body the way the worker does (adapter
//! looked up in [`AdapterRegistry::with_defaults`], `ChannelAdapter::decode`, then `refine` per
//! update), and check what must hold for every input besides "does not panic".

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};
use intake_adapters::{AdapterRegistry, ChannelType, Delivery, EntryPointInfo, Headers, UpdateAction};
use serde_json::{json, Map, Value};

fn registry() -> &'static AdapterRegistry {
    static REGISTRY: OnceLock<AdapterRegistry> = OnceLock::new();
    REGISTRY.get_or_init(AdapterRegistry::with_defaults)
}

fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("valid time") // 2026-01-01T00:00:00Z
}

/// Entry point metadata naming every adapter setting `refine` reads, in its usual shapes.
fn entry_point_metadata() -> &'static Map<String, Value> {
    static METADATA: OnceLock<Map<String, Value>> = OnceLock::new();
    METADATA.get_or_init(|| {
        let value = json!({
            "botUserId": ["U0BOT", "U0442US8QGH"],
            "botId": 123456789,
            "botUsername": "@intake_bot",
            "ownNumbers": ["+14155238886", "whatsapp:+14155238886"],
            "agentDomains": ["example.com", "@agents.example.org"],
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    })
}

/// The headers a delivery of `adapter_key` plausibly carries: the gateway's envelope headers plus
/// the provider headers it forwards. (No adapter reads headers today; they are here so one that
/// starts to is fuzzed with realistic values.)
fn headers(adapter_key: &str, envelope: Option<&str>) -> Headers {
    let mut headers = Headers::new();
    headers.insert("x-intake-adapter".into(), adapter_key.into());
    headers.insert("x-intake-project".into(), "fuzz-project".into());
    headers.insert("x-intake-published-at-ms".into(), "1767225600000".into());
    if let Some(envelope) = envelope {
        headers.insert("x-intake-external-channel-id".into(), envelope.into());
    }
    match adapter_key {
        "slack" => {
            headers.insert("x-slack-request-timestamp".into(), "1767225600".into());
            headers.insert("x-slack-retry-num".into(), "1".into());
            headers.insert("x-slack-retry-reason".into(), "http_timeout".into());
        }
        "twilio-sms" => {
            headers.insert("x-twilio-idempotency-token".into(), "fuzz-idempotency-token".into());
        }
        "webhook" => {
            headers.insert("webhook-id".into(), "msg_fuzz".into());
            headers.insert("webhook-timestamp".into(), "1767225600".into());
        }
        _ => {}
    }
    headers.insert("user-agent".into(), "intake-fuzz".into());
    headers
}

/// Poll a future that must complete at once (adapters do no I/O, so `decode` never waits).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an adapter's decode returned Pending: adapters must not wait"),
    }
}

/// Decode `body` with the registry's `(channel_type, adapter_key)` adapter, as the worker does,
/// with and without an envelope entry point, and check every update.
pub fn decode(channel_type: ChannelType, adapter_key: &str, envelope: &str, body: &[u8]) {
    let adapter = registry().get(channel_type, adapter_key).expect("adapter registered");
    for envelope in [Some(envelope), None] {
        let headers = headers(adapter_key, envelope);
        let delivery = Delivery { body, headers: &headers, external_channel_id: envelope, received_at: received_at() };
        let updates = match ready(adapter.decode(&delivery)) {
            Ok(updates) => updates,
            Err(error) => {
                // The worker dead-letters with these; both must be usable.
                assert!(!error.reason_code().is_empty());
                let _ = error.to_string();
                continue;
            }
        };
        for mut update in updates {
            assert!(!update.idempotency_key().is_empty(), "empty idempotency key: {update:?}");
            let candidates: Vec<String> =
                update.channel_id_candidates(envelope).into_iter().map(str::to_owned).collect();
            let entry_point = candidates.first().map_or(adapter_key, String::as_str).to_owned();
            adapter.refine(
                &mut update,
                &EntryPointInfo { external_channel_id: &entry_point, adapter_key, metadata: entry_point_metadata() },
            );
            // What the worker hands on must serialize.
            serde_json::to_vec(&update).expect("a normalized update serializes");
            if let UpdateAction::Append(message) = &update.action {
                let _ = intake_adapters::preview_of(&message.body, 200);
            }
        }
    }
}
