//! The ~1 KB generic-webhook message of the throughput runs (routing key `webhook.webhook`).

use serde_json::json;

use super::{BenchMessage, Kind, WORDS};

/// The external channel id of the bench's `n`-th webhook entry point.
pub(in crate::bench) fn entry_point_name(n: usize) -> String {
    format!("bench-shop-{n:02}")
}

/// The `conversationKey` of conversation `conv` of run `run`.
pub(in crate::bench) fn conversation_key(run: usize, conv: usize) -> String {
    format!("r{run}-c{conv:04}")
}

/// Message `i` of run `run`: key `r<run>-<i>`, conversation `i % conversations`, on entry point
/// `conversation % entry_points`.
pub(in crate::bench) fn webhook_message(
    run: usize,
    i: usize,
    conversations: usize,
    entry_points: usize,
) -> BenchMessage {
    BenchMessage { kind: Kind::Webhook, external_channel_id: None, body: payload(run, i, conversations, entry_points) }
}

/// A realistic ~1 KB generic-webhook message: run `run`, message `i`.
fn payload(run: usize, i: usize, conversations: usize, entry_points: usize) -> Vec<u8> {
    let conv = i % conversations;
    let nth = i / conversations;
    let outbound = nth % 3 == 2;
    let mut seed =
        (run as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut text = String::with_capacity(640);
    while text.len() < 560 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if !text.is_empty() {
            text.push(if seed.is_multiple_of(11) { '.' } else { ' ' });
            if seed.is_multiple_of(11) {
                text.push(' ');
            }
        }
        text.push_str(WORDS[(seed % WORDS.len() as u64) as usize]);
    }
    let occurred = chrono::DateTime::<chrono::Utc>::from_timestamp(super::message_time(run, i), 0)
        .expect("valid time")
        .to_rfc3339();
    let sender = if outbound {
        json!({"id": format!("agent-{}", conv % 7), "displayName": format!("Agent {}", conv % 7)})
    } else {
        json!({
            "id": format!("cust-{run}-{conv}"),
            "displayName": format!("Customer {conv}"),
            "primaryEmail": format!("customer{conv}@example.com"),
            "profileImageUrl": format!("https://cdn.example.com/avatars/{conv}.png"),
        })
    };
    serde_json::to_vec(&json!({
        "id": format!("r{run}-{i:06}"),
        "conversationKey": conversation_key(run, conv),
        "externalChannelId": entry_point_name(conv % entry_points),
        "direction": if outbound { "outbound" } else { "inbound" },
        "subject": format!("Order #{} - where is my parcel?", 100_000 + conv),
        "body": text,
        "sender": sender,
        "occurredAt": occurred,
        "metadata": {"source": "shop", "orderId": 100_000 + conv, "locale": "en-GB", "priority": if conv.is_multiple_of(5) { "high" } else { "normal" }},
    }))
    .expect("serialize payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_about_a_kilobyte_and_decode() {
        let message = webhook_message(3, 1234, 500, 20);
        assert_eq!(message.routing_key(), "webhook.webhook");
        let body = message.body;
        assert!((800..1300).contains(&body.len()), "{} bytes", body.len());
        let updates = intake_adapters::webhook::decode_generic(&body, chrono::Utc::now()).expect("decodes");
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].external_channel_id.as_deref(), Some("bench-shop-14"));
        assert_eq!(updates[0].thread.key.as_deref(), Some("r3-c0234"));
    }
}
