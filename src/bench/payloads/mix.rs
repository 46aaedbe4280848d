//! The real-size traffic mix: 30 % email, 20 % Slack, 20 % WhatsApp, 10 % Telegram and 20 %
//! generic webhooks, interleaved in a fixed pattern of ten, each message a pure function of
//! `(seed, run, index)`.

use intake_adapters::ChannelType;
use serde_json::json;

use super::chat::{self, slack_channel, whatsapp_number_id, SLACK_CHANNELS, TELEGRAM_BOT, WHATSAPP_NUMBERS};
use super::email::{self, mailbox, MAILBOXES};
use super::{webhook_message, BenchMessage, Kind};

/// Every ten messages: three emails, two Slack, two WhatsApp, one Telegram, two webhooks.
const PATTERN: [Kind; 10] = [
    Kind::Email,
    Kind::Slack,
    Kind::Webhook,
    Kind::WhatsApp,
    Kind::Email,
    Kind::Telegram,
    Kind::Slack,
    Kind::Email,
    Kind::WhatsApp,
    Kind::Webhook,
];

/// The kind of message `i` and its index among the messages of that kind.
fn slot(i: usize) -> (Kind, usize) {
    let kind = PATTERN[i % PATTERN.len()];
    let per_round = PATTERN.iter().filter(|k| **k == kind).count();
    let before = PATTERN[..i % PATTERN.len()].iter().filter(|k| **k == kind).count();
    (kind, i / PATTERN.len() * per_round + before)
}

/// Message `i` of the mix of run `run`; the webhook share is spread like the throughput runs
/// (`conversations` over `entry_points`).
pub(in crate::bench) fn mix_message(
    seed: u64,
    run: usize,
    i: usize,
    conversations: usize,
    entry_points: usize,
) -> BenchMessage {
    let (kind, k) = slot(i);
    match kind {
        Kind::Email => email::email(seed, run, k),
        Kind::Slack => chat::slack(seed, run, k),
        Kind::WhatsApp => chat::whatsapp(seed, run, k),
        Kind::Telegram => chat::telegram(seed, run, k),
        Kind::Webhook => webhook_message(run, k, conversations, entry_points),
    }
}

/// The entry points the mix needs besides the webhook ones: `(channel type, adapter key,
/// external channel id)`.
pub(in crate::bench) fn mix_entry_points() -> Vec<(ChannelType, &'static str, String)> {
    let mut out = Vec::new();
    out.extend((0..MAILBOXES).map(|n| (ChannelType::Email, "email", mailbox(n))));
    out.extend((0..SLACK_CHANNELS).map(|n| (ChannelType::Chat, "slack", slack_channel(n))));
    out.extend((0..WHATSAPP_NUMBERS).map(|n| (ChannelType::Chat, "whatsapp", whatsapp_number_id(n))));
    out.push((ChannelType::Chat, "telegram", TELEGRAM_BOT.to_owned()));
    out
}

/// Counts and sizes of a generated mix.
#[derive(Debug, Clone, Default)]
pub(in crate::bench) struct MixStats {
    pub seed: u64,
    pub messages: usize,
    pub bytes: usize,
    /// (kind, messages, bytes), in [`Kind::ALL`] order.
    pub by_kind: Vec<(Kind, usize, usize)>,
}

impl MixStats {
    pub fn of(seed: u64, messages: &[BenchMessage]) -> Self {
        let by_kind = Kind::ALL
            .iter()
            .map(|kind| {
                let of_kind = messages.iter().filter(|m| m.kind == *kind);
                (*kind, of_kind.clone().count(), of_kind.map(|m| m.body.len()).sum())
            })
            .collect();
        MixStats { seed, messages: messages.len(), bytes: messages.iter().map(|m| m.body.len()).sum(), by_kind }
    }

    pub fn average(&self) -> usize {
        self.bytes / self.messages.max(1)
    }

    /// `email 30% avg 24,100 B, slack 20% avg 1,380 B, …`
    pub fn describe(&self) -> String {
        self.by_kind
            .iter()
            .filter(|(_, n, _)| *n > 0)
            .map(|(kind, n, bytes)| {
                format!(
                    "{} {:.0}% avg {} B",
                    kind.label(),
                    *n as f64 * 100.0 / self.messages.max(1) as f64,
                    super::super::report::thousands((*bytes / n) as f64)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn json(&self) -> serde_json::Value {
        let by_kind: serde_json::Map<String, serde_json::Value> = self
            .by_kind
            .iter()
            .map(|(kind, n, bytes)| {
                (kind.label().to_owned(), json!({"messages": n, "payloadBytesAvg": bytes / (*n).max(1)}))
            })
            .collect();
        json!({"seed": self.seed, "messages": self.messages, "payloadBytesAvg": self.average(), "byKind": by_kind})
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use intake_adapters::chat::{slack, telegram, whatsapp};
    use intake_adapters::{Delivery, Headers, NormalizedUpdate, UpdateAction};

    use super::*;

    fn generate(seed: u64, run: usize, n: usize) -> Vec<BenchMessage> {
        (0..n).map(|i| mix_message(seed, run, i, 500, 20)).collect()
    }

    #[test]
    fn the_mix_is_deterministic_and_has_its_shares() {
        let a = generate(11, 7, 400);
        assert_eq!(a, generate(11, 7, 400), "same seed, same bytes");
        assert_ne!(a, generate(12, 7, 400), "another seed, other bytes");
        let stats = MixStats::of(11, &a);
        let counts: Vec<usize> = stats.by_kind.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(counts, vec![120, 80, 80, 40, 80], "email, slack, whatsapp, telegram, webhook");
        assert!(stats.average() > 4_000, "average {} bytes", stats.average());
        // Index within the kind: the 10 first slots give each kind's first messages in order.
        let firsts: Vec<(Kind, usize)> = (0..10).map(slot).collect();
        assert_eq!(firsts[7], (Kind::Email, 2));
        assert_eq!(slot(17), (Kind::Email, 5));
    }

    fn decode(message: &BenchMessage) -> Vec<NormalizedUpdate> {
        let headers = Headers::new();
        let delivery = Delivery {
            body: &message.body,
            headers: &headers,
            external_channel_id: message.external_channel_id.as_deref(),
            received_at: chrono::Utc::now(),
        };
        let decoded = match message.kind {
            Kind::Email => intake_adapters::email::decode(&delivery, &Default::default()),
            Kind::Slack => slack::decode(&message.body, &delivery, &Default::default()),
            Kind::WhatsApp => whatsapp::decode(&message.body, &delivery, &Default::default()),
            Kind::Telegram => telegram::decode(&message.body, &delivery, &Default::default()),
            Kind::Webhook => intake_adapters::webhook::decode_generic(&message.body, delivery.received_at),
        };
        decoded.unwrap_or_else(|e| panic!("{:?} does not decode: {e}", message.kind))
    }

    #[test]
    fn every_message_decodes_to_one_new_message_on_a_registered_entry_point() {
        let registered: HashSet<(ChannelType, String)> = mix_entry_points()
            .into_iter()
            .map(|(t, _, id)| (t, id))
            .chain((0..20).map(|n| (ChannelType::Webhook, super::super::entry_point_name(n))))
            .collect();
        let mut keys = HashSet::new();
        for (i, message) in generate(11, 3, 1000).iter().enumerate() {
            let updates = decode(message);
            assert_eq!(updates.len(), 1, "message {i} ({:?})", message.kind);
            let update = &updates[0];
            let UpdateAction::Append(m) = &update.action else { panic!("message {i}: not an append") };
            assert!(keys.insert(m.idempotency_key.clone()), "message {i}: key {} twice", m.idempotency_key);
            assert!(!m.body.trim().is_empty(), "message {i}: empty body");
            let candidates = update.channel_id_candidates(message.external_channel_id.as_deref());
            let channel_type = message.kind.channel_type();
            assert!(
                candidates.iter().any(|c| registered.contains(&(channel_type, c.to_string()))),
                "message {i} ({:?}): none of {candidates:?} is registered",
                message.kind
            );
        }
    }
}
