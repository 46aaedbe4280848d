//! Message bodies the bench publishes, all generated: the ~1 KB generic webhook of the throughput
//! runs, and the real-size mix of the `mix` scenario (emails, Slack, WhatsApp, Telegram and
//! webhooks). Everything is a pure function of its inputs (a seed and an index) and of the
//! bench's start time (the message times), so the same flags publish the same messages.

mod chat;
mod email;
mod mix;
mod webhook;

pub(super) use mix::{mix_entry_points, mix_message, MixStats};
pub(super) use webhook::{conversation_key as webhook_conversation_key, entry_point_name, webhook_message};

use intake_adapters::ChannelType;

/// Message `k` of run `run`: its time in seconds. Live traffic is stamped about when it
/// arrives, so every message moves its conversation's activity forward (which costs an index
/// update); a backlog stamped in the past would skip that. So the times start a little ahead
/// of the bench's start and rise with `k`, and stay within intake's future skew (24 h) for
/// 20 runs of 400,000 messages.
pub(super) fn message_time(run: usize, k: usize) -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| chrono::Utc::now().timestamp() + 600);
    start + run as i64 * 3_600 + k as i64 / 10
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BenchMessage {
    pub kind: Kind,
    /// `x-intake-external-channel-id`, when the publisher knows the entry point (an MTA's
    /// envelope recipient, the bot a Telegram webhook came in for).
    pub external_channel_id: Option<String>,
    pub body: Vec<u8>,
}

impl BenchMessage {
    pub fn routing_key(&self) -> &'static str {
        self.kind.routing_key()
    }
}

/// What a message is, and so where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Kind {
    Email,
    Slack,
    WhatsApp,
    Telegram,
    Webhook,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Email, Kind::Slack, Kind::WhatsApp, Kind::Telegram, Kind::Webhook];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Slack => "slack",
            Kind::WhatsApp => "whatsapp",
            Kind::Telegram => "telegram",
            Kind::Webhook => "webhook",
        }
    }

    pub fn channel_type(self) -> ChannelType {
        match self {
            Kind::Email => ChannelType::Email,
            Kind::Slack | Kind::WhatsApp | Kind::Telegram => ChannelType::Chat,
            Kind::Webhook => ChannelType::Webhook,
        }
    }

    /// The adapter key: the second word of the routing key.
    pub fn adapter_key(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Slack => "slack",
            Kind::WhatsApp => "whatsapp",
            Kind::Telegram => "telegram",
            Kind::Webhook => "webhook",
        }
    }

    pub fn routing_key(self) -> &'static str {
        match self {
            Kind::Email => "email.email",
            Kind::Slack => "chat.slack",
            Kind::WhatsApp => "chat.whatsapp",
            Kind::Telegram => "chat.telegram",
            Kind::Webhook => "webhook.webhook",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Email => "message/rfc822",
            _ => "application/json",
        }
    }
}

/// A small deterministic generator (SplitMix64): the same `(seed, stream, index)` gives the
/// same numbers everywhere, without a dependency on `rand`'s algorithms staying the same.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64, index: u64) -> Self {
        let mut rng =
            Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `0..n`
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// `lo..=hi`
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// `[0, 1)`
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    pub fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits + 16);
        while s.len() < digits {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(digits);
        s
    }
}

/// Customer-service vocabulary for generated text.
pub(super) const WORDS: &[&str] = &[
    "order",
    "delivery",
    "parcel",
    "refund",
    "invoice",
    "address",
    "tracking",
    "courier",
    "warehouse",
    "payment",
    "account",
    "discount",
    "exchange",
    "size",
    "colour",
    "damaged",
    "missing",
    "late",
    "update",
    "thanks",
    "please",
    "could",
    "you",
    "check",
    "when",
    "will",
    "arrive",
    "the",
    "my",
    "and",
    "still",
    "not",
    "yet",
    "again",
    "today",
];

/// A few words from other languages, for bodies and subjects that are not plain ASCII.
const WORDS_INTL: &[&str] = &["Grüße", "Größe", "café", "déjà", "naïve", "señor", "Straße", "über", "€", "–"];

/// Sentences of about `len` bytes: capitalized, ending in a full stop, now and then a word
/// from [`WORDS_INTL`] when `intl`.
pub(super) fn prose(rng: &mut Rng, len: usize, intl: bool) -> String {
    let mut text = String::with_capacity(len + 16);
    let mut start = true;
    while text.len() < len {
        let word = if intl && rng.percent(4) { *rng.pick(WORDS_INTL) } else { *rng.pick(WORDS) };
        if start {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
            start = false;
        } else {
            text.push_str(word);
        }
        if rng.percent(9) {
            text.push_str(". ");
            start = true;
        } else {
            text.push(' ');
        }
    }
    let trimmed = text.trim_end().trim_end_matches('.').len();
    text.truncate(trimmed);
    text.push('.');
    text
}

const FIRST_NAMES: &[&str] = &[
    "Anna",
    "Ben",
    "Chloé",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hugo",
    "Ingrid",
    "Jonas",
    "Katarzyna",
    "Lars",
    "Mia",
    "Noah",
    "Olivia",
    "Pierre",
    "Zoë",
    "Jürgen",
    "Aiko",
    "Mateo",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Müller",
    "García",
    "Nowak",
    "Jensen",
    "Rossi",
    "Dubois",
    "O'Brien",
    "Kowalski",
    "Schmidt",
    "Fernández",
    "Andersson",
    "Tanaka",
    "Silva",
];

/// A customer's (first, last) name.
pub(super) fn person(rng: &mut Rng) -> (&'static str, &'static str) {
    (*rng.pick(FIRST_NAMES), *rng.pick(LAST_NAMES))
}

/// `name` as a lower-case ASCII handle (`zoë.o'brien` → `zoe.obrien`).
pub(super) fn handle(name: &str) -> String {
    name.chars()
        .filter_map(|c| match c {
            'é' | 'è' | 'ë' => Some('e'),
            'ü' => Some('u'),
            'ö' => Some('o'),
            'á' => Some('a'),
            c if c.is_ascii_alphanumeric() || c == '.' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7, 1, 42).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::new(7, 1, 42);
        let mut s = Rng::new(7, 1, 43);
        assert_ne!(r.next_u64(), s.next_u64());
        let mut r = Rng::new(1, 2, 3);
        for _ in 0..1000 {
            let v = r.range(5, 9);
            assert!((5..=9).contains(&v));
            assert!((0.0..1.0).contains(&r.unit()));
        }
    }

    #[test]
    fn prose_is_about_the_asked_length() {
        let mut rng = Rng::new(1, 1, 1);
        for len in [40, 600, 5000] {
            let text = prose(&mut rng, len, true);
            assert!(text.len() >= len && text.len() < len + 20, "{len}: {}", text.len());
            assert!(text.ends_with('.'));
        }
        assert_eq!(handle("Zoë.O'Brien"), "zoe.obrien");
    }
}
