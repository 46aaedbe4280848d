//! The normalized shapes every adapter produces.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Kind of channel; the first word of an AMQP routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    Email,
    Chat,
    Webhook,
}

impl ChannelType {
    pub const ALL: [ChannelType; 3] = [ChannelType::Email, ChannelType::Chat, ChannelType::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Email => "email",
            ChannelType::Chat => "chat",
            ChannelType::Webhook => "webhook",
        }
    }
}

impl fmt::Display for ChannelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "email" => Ok(ChannelType::Email),
            "chat" => Ok(ChannelType::Chat),
            "webhook" => Ok(ChannelType::Webhook),
            other => Err(format!("unknown channel type `{other}` (expected email, chat or webhook)")),
        }
    }
}

/// Direction of a message relative to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// customer → us
    Inbound,
    /// us (agent, bot) → customer
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            other => Err(format!("unknown direction `{other}` (expected inbound or outbound)")),
        }
    }
}

/// Headers of a delivery, keys lower-cased. AMQP headers and HTTP headers both land here.
pub type Headers = BTreeMap<String, String>;

/// One delivery as an adapter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub body: &'a [u8],
    pub headers: &'a Headers,
    /// The entry point's id in the outside system, when the publisher knew it.
    pub external_channel_id: Option<&'a str>,
    /// When the broker/gateway received it; used where the payload has no time of its own.
    pub received_at: DateTime<Utc>,
}

impl Delivery<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// Who sent a message, as the channel knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sender {
    /// The sender's id in the channel (email address, Slack user id, phone number).
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub primary_email: Option<String>,
    pub profile_image_url: Option<String>,
}

/// Metadata about an attachment; content is never carried here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub size: Option<u64>,
    pub content_id: Option<String>,
    pub sha256: Option<String>,
    pub url: Option<String>,
    #[serde(default)]
    pub inline: bool,
    /// Where the runtime stored the content (set by intake, not by adapters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_key: Option<String>,
    /// The bytes, when the adapter was asked to keep them; never serialized.
    #[serde(skip)]
    pub content: Option<AttachmentContent>,
}

/// Attachment bytes carried from an adapter to the runtime's attachment store.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AttachmentContent(pub Vec<u8>);

impl fmt::Debug for AttachmentContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttachmentContent({} bytes)", self.0.len())
    }
}

/// A message to append to a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedMessage {
    /// Idempotency key: the channel's own id for the message (email Message-ID, Slack `ts`,
    /// provider message id). Applying the same key twice changes nothing.
    pub idempotency_key: String,
    pub direction: Direction,
    pub sender: Sender,
    pub subject: Option<String>,
    pub body: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// When the message was sent, per the channel.
    pub occurred_at: DateTime<Utc>,
    /// Auto-replies and bounces never reopen a conversation nor count as a customer reply.
    #[serde(default)]
    pub is_auto_reply: bool,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// What makes this message itself ([`content_fingerprint`]), set by adapters that know the
    /// channel's own send time; `None`: [`NormalizedMessage::fingerprint`] computes it without
    /// a time. The same idempotency key with another fingerprint is a different message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl NormalizedMessage {
    /// The content fingerprint: the adapter's, else one without a time.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone().unwrap_or_else(|| content_fingerprint(self, None))
    }
}

/// SHA-256 (hex) over what makes a message itself: the sender's id and address, the subject,
/// the body text (line endings unified, surrounding white space trimmed), the attachments'
/// hashes (sorted; name and size where there is no hash) and `own_time`, the channel's own
/// send time as it stated it (an email's `Date`), when it stated one. What is added on the way
/// (`Received:` headers, the receive or publish time, a default time) is left out, so every
/// copy of one message has the same fingerprint, while a different message that reuses the
/// key (a recycled Message-ID) has another. Each part is labelled and length-prefixed.
pub fn content_fingerprint(message: &NormalizedMessage, own_time: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut part = |label: &str, value: &str| {
        hash.update(label.as_bytes());
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value.as_bytes());
    };
    let sender = &message.sender;
    part("sender.id", &sender.id.as_deref().unwrap_or_default().to_lowercase());
    part("sender.email", &sender.primary_email.as_deref().unwrap_or_default().to_lowercase());
    part("subject", message.subject.as_deref().unwrap_or_default().trim());
    part("body", message.body.replace("\r\n", "\n").trim());
    let mut attachments: Vec<String> = message
        .attachments
        .iter()
        .map(|a| match &a.sha256 {
            Some(sha) => sha.to_ascii_lowercase(),
            None => format!(
                "{}|{}|{}",
                a.filename.as_deref().unwrap_or_default(),
                a.size.unwrap_or_default(),
                a.url.as_deref().unwrap_or_default()
            ),
        })
        .collect();
    attachments.sort();
    for a in &attachments {
        part("attachment", a);
    }
    if let Some(time) = own_time.map(str::trim).filter(|t| !t.is_empty()) {
        part("time", time);
    }
    hex::encode(hash.finalize())
}

/// What an update does to the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UpdateAction {
    /// Append a new message.
    Append(NormalizedMessage),
    /// An edit of an earlier message (e.g. Slack `message_changed`): replace its body.
    Edit { idempotency_key: String, body: String, edited_at: DateTime<Utc> },
    /// The channel deleted an earlier message.
    Delete { idempotency_key: String, deleted_at: DateTime<Utc> },
    /// A delivery status for an outbound message (sent, delivered, read, failed).
    Status {
        idempotency_key: String,
        status: String,
        at: DateTime<Utc>,
        #[serde(default)]
        detail: Option<String>,
    },
}

/// How to find the conversation an update belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadRef {
    /// A stable key for the conversation within its entry point (Slack thread ts, Telegram
    /// chat id, a webhook conversation key). `None` means "start a new conversation unless
    /// `references` finds one".
    pub key: Option<String>,
    /// Idempotency keys of earlier messages this one answers (email In-Reply-To/References),
    /// oldest first. Of those found in the store, the newest (last) picks the conversation.
    #[serde(default)]
    pub references: Vec<String>,
    /// An intake conversation id the channel carried back to us (e.g. the reply token in
    /// `support+<token>@example.com`). Used when it names a conversation of the same project.
    #[serde(default)]
    pub conversation_id_hint: Option<String>,
}

/// One normalized update produced by an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedUpdate {
    /// The entry point's id in the outside system (mailbox, Slack channel id, phone number).
    /// `None` (and no fallbacks) means: take the one from the delivery envelope.
    pub external_channel_id: Option<String>,
    /// Further candidates, tried in order when `external_channel_id` is not a known entry point
    /// (an email names its mailbox in several headers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_channel_ids: Vec<String>,
    pub thread: ThreadRef,
    pub action: UpdateAction,
}

impl NormalizedUpdate {
    /// The external channel ids to resolve, in order: the payload's own, its fallbacks, then the
    /// delivery envelope's (the entry point the publisher or the gateway named), once each.
    pub fn channel_id_candidates<'a>(&'a self, envelope: Option<&'a str>) -> Vec<&'a str> {
        let mut candidates: Vec<&str> = Vec::new();
        let named = self.external_channel_id.iter().chain(&self.fallback_channel_ids).map(String::as_str);
        for id in named.chain(envelope).map(str::trim).filter(|id| !id.is_empty()) {
            if !candidates.contains(&id) {
                candidates.push(id);
            }
        }
        candidates
    }

    /// Replace every U+0000 in the update's text with U+FFFD. PostgreSQL's `text` and `jsonb`
    /// cannot hold U+0000, and a NUL that slipped into a mail or a chat payload should not cost
    /// the whole message. Returns whether anything was replaced.
    pub fn replace_nul(&mut self) -> bool {
        let mut replaced = false;
        let mut fix = |s: &mut String| {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
                replaced = true;
            }
        };
        for s in self.external_channel_id.iter_mut().chain(&mut self.fallback_channel_ids) {
            fix(s);
        }
        for s in
            self.thread.key.iter_mut().chain(&mut self.thread.references).chain(&mut self.thread.conversation_id_hint)
        {
            fix(s);
        }
        match &mut self.action {
            UpdateAction::Append(m) => {
                for s in [&mut m.idempotency_key, &mut m.body].into_iter().chain(&mut m.subject) {
                    fix(s);
                }
                let sender = &mut m.sender;
                for s in sender
                    .id
                    .iter_mut()
                    .chain(&mut sender.display_name)
                    .chain(&mut sender.primary_email)
                    .chain(&mut sender.profile_image_url)
                {
                    fix(s);
                }
                for a in &mut m.attachments {
                    for s in a
                        .filename
                        .iter_mut()
                        .chain(&mut a.content_type)
                        .chain(&mut a.content_id)
                        .chain(&mut a.sha256)
                        .chain(&mut a.url)
                        .chain(&mut a.storage_key)
                    {
                        fix(s);
                    }
                }
                replace_nul_in_map(&mut m.metadata, &mut fix);
            }
            UpdateAction::Edit { idempotency_key, body, .. } => {
                fix(idempotency_key);
                fix(body);
            }
            UpdateAction::Delete { idempotency_key, .. } => fix(idempotency_key),
            UpdateAction::Status { idempotency_key, status, detail, .. } => {
                for s in [idempotency_key, status].into_iter().chain(detail) {
                    fix(s);
                }
            }
        }
        replaced
    }

    /// The idempotency key of the message this update appends or touches.
    pub fn idempotency_key(&self) -> &str {
        match &self.action {
            UpdateAction::Append(m) => &m.idempotency_key,
            UpdateAction::Edit { idempotency_key, .. }
            | UpdateAction::Delete { idempotency_key, .. }
            | UpdateAction::Status { idempotency_key, .. } => idempotency_key,
        }
    }
}

fn replace_nul_in_map(map: &mut serde_json::Map<String, serde_json::Value>, fix: &mut impl FnMut(&mut String)) {
    if map.keys().any(|k| k.contains('\0')) {
        *map = std::mem::take(map)
            .into_iter()
            .map(|(mut k, v)| {
                fix(&mut k);
                (k, v)
            })
            .collect();
    }
    for value in map.values_mut() {
        replace_nul_in_value(value, fix);
    }
}

fn replace_nul_in_value(value: &mut serde_json::Value, fix: &mut impl FnMut(&mut String)) {
    // Iterative, so a deeply nested metadata value cannot overflow the stack.
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::String(s) => fix(s),
            serde_json::Value::Array(items) => stack.extend(items.iter_mut()),
            serde_json::Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    replace_nul_in_map(map, fix);
                } else {
                    stack.extend(map.values_mut());
                }
            }
            _ => {}
        }
    }
}

/// What the runtime knows about the entry point an update resolved to; see
/// [`crate::ChannelAdapter::refine`].
#[derive(Debug, Clone, Copy)]
pub struct EntryPointInfo<'a> {
    /// Normalized (e-mail addresses lower-cased).
    pub external_channel_id: &'a str,
    pub adapter_key: &'a str,
    /// The entry point's `metadata` object (adapter settings such as `botUserId`,
    /// `agentDomains`).
    pub metadata: &'a serde_json::Map<String, serde_json::Value>,
}

/// Cut a body down to a one-line preview of at most `max_chars` characters.
pub fn preview_of(body: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in body.split_whitespace() {
        let extra = if out.is_empty() { 0 } else { 1 };
        let len = word.chars().count();
        if count + extra + len > max_chars {
            if out.is_empty() {
                out.extend(word.chars().take(max_chars.saturating_sub(1)));
            }
            out.push('…');
            return out;
        }
        if extra == 1 {
            out.push(' ');
        }
        out.push_str(word);
        count += extra + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_replaced_everywhere() {
        let mut metadata = serde_json::Map::new();
        metadata.insert("k\0".into(), serde_json::json!({"deep": ["a\0", {"x\0": "b\0"}]}));
        let mut update = NormalizedUpdate {
            external_channel_id: Some("c\0".into()),
            fallback_channel_ids: vec![],
            thread: ThreadRef { key: Some("t\0".into()), ..Default::default() },
            action: UpdateAction::Append(NormalizedMessage {
                idempotency_key: "id\0".into(),
                direction: Direction::Inbound,
                sender: Sender { display_name: Some("Ada\0".into()), ..Default::default() },
                subject: Some("s\0".into()),
                body: "a\0b".into(),
                attachments: vec![Attachment { filename: Some("f\0.txt".into()), ..Default::default() }],
                occurred_at: Utc::now(),
                is_auto_reply: false,
                metadata,
                fingerprint: None,
            }),
        };
        assert!(update.replace_nul());
        let text = serde_json::to_string(&update).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert_eq!(text.matches('\u{FFFD}').count(), 11, "{text}");
        assert!(!update.replace_nul(), "nothing left to replace");
    }

    #[test]
    fn preview_collapses_whitespace_and_cuts_on_words() {
        assert_eq!(preview_of("  hello\n\n world  ", 50), "hello world");
        assert_eq!(preview_of("one two three", 8), "one two…");
        assert_eq!(preview_of("abcdefghij", 5), "abcd…");
        assert_eq!(preview_of("", 5), "");
    }
}
