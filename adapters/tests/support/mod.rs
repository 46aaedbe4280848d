//! Helpers shared by the email test files that are not `email.rs`.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use intake_adapters::email::{self, EmailConfig};
use intake_adapters::{Delivery, Headers, NormalizedMessage, NormalizedUpdate, UpdateAction};

/// After every test message's Date.
pub fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
}

/// Decode one raw mail into its one update.
pub fn decode(raw: &[u8]) -> NormalizedUpdate {
    let headers = Headers::new();
    let delivery = Delivery { body: raw, headers: &headers, external_channel_id: None, received_at: received_at() };
    let mut updates = email::decode(&delivery, &EmailConfig::default()).expect("decodes");
    assert_eq!(updates.len(), 1, "one mail, one update");
    updates.remove(0)
}

/// The appended message of an update.
pub fn message(update: &NormalizedUpdate) -> &NormalizedMessage {
    match &update.action {
        UpdateAction::Append(m) => m,
        other => panic!("expected an append, got {other:?}"),
    }
}

/// Decode one raw mail into its appended message.
pub fn decode_message(raw: &[u8]) -> NormalizedMessage {
    message(&decode(raw)).clone()
}

/// A file of `tests/fixtures/email/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/email/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The attachments' file names, in order (`-` for none).
pub fn attachment_names(m: &NormalizedMessage) -> Vec<String> {
    m.attachments.iter().map(|a| a.filename.clone().unwrap_or_else(|| "-".into())).collect()
}
