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
    fn preview_collapses_whitespace_and_cuts_on_words() {
        assert_eq!(preview_of("  hello\n\n world  ", 50), "hello world");
        assert_eq!(preview_of("one two three", 8), "one two…");
        assert_eq!(preview_of("abcdefghij", 5), "abcd…");
        assert_eq!(preview_of("", 5), "");
    }
}
