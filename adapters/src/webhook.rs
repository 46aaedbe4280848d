//! The generic webhook adapter: any system can post messages to intake in one documented JSON
//! shape (see the README, "Generic webhook payload"). A body is one object or an array of them.
//!
//! Each message's [`NormalizedMessage::fingerprint`] is [`content_fingerprint`] with the
//! payload's `occurredAt` as sent (not re-formatted), when it has one.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::{
    content_fingerprint, AdapterError, Attachment, ChannelAdapter, ChannelType, DecodedItem, Delivery, Direction,
    EntryPointInfo, NormalizedMessage, NormalizedUpdate, Sender, ThreadRef, UpdateAction,
};

/// Largest body the adapter will parse; bigger ones are refused before any JSON work.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookMessage {
    /// Idempotency key of the message in the source system.
    id: String,
    /// Groups messages into one conversation within the entry point.
    conversation_key: Option<String>,
    direction: Direction,
    #[serde(default)]
    sender: Sender,
    subject: Option<String>,
    body: String,
    #[serde(default)]
    attachments: Vec<Attachment>,
    /// RFC 3339; kept as sent, because the fingerprint takes the time as the sender wrote it.
    occurred_at: Option<String>,
    #[serde(default)]
    is_auto_reply: bool,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    external_channel_id: Option<String>,
    #[serde(default)]
    in_reply_to: Vec<String>,
}

/// Decodes the generic JSON shape. Also used, under other channel types and keys, as the
/// trivial adapter in tests and for integrators that already normalize their payloads.
pub struct GenericWebhookAdapter {
    channel_type: ChannelType,
    key: String,
}

impl GenericWebhookAdapter {
    pub fn new(channel_type: ChannelType, key: &str) -> Self {
        Self { channel_type, key: key.to_owned() }
    }
}

/// Pure decode function, exposed for fuzzing: all or nothing.
pub fn decode_generic(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    decode_generic_items(body, received_at)?.into_iter().collect()
}

/// [`decode_generic`] item by item: an array's bad item fails alone.
pub fn decode_generic_items(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<DecodedItem>, AdapterError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AdapterError::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let messages = parse_messages(&mut de)?;
    let many = messages.len() > 1;
    Ok(messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let m = m?;
            let at = |what: &str| if many { format!("[{i}]: {what}") } else { what.to_owned() };
            if m.id.trim().is_empty() {
                return Err(AdapterError::Missing(at("id")));
            }
            let occurred_at = match &m.occurred_at {
                Some(raw) => raw.parse::<DateTime<Utc>>().map_err(|e| {
                    AdapterError::Malformed(at(&format!("occurredAt `{}` is not an RFC 3339 time: {e}", clip(raw))))
                })?,
                None => received_at,
            };
            let mut message = NormalizedMessage {
                idempotency_key: m.id,
                direction: m.direction,
                sender: m.sender,
                subject: m.subject,
                body: m.body,
                attachments: m.attachments,
                occurred_at,
                is_auto_reply: m.is_auto_reply,
                metadata: m.metadata,
                fingerprint: None,
            };
            message.fingerprint = Some(content_fingerprint(&message, m.occurred_at.as_deref()));
            Ok(NormalizedUpdate {
                external_channel_id: m.external_channel_id,
                fallback_channel_ids: vec![],
                thread: ThreadRef {
                    key: m.conversation_key,
                    // The newest (last) ones, as many as a mail's References keep: each is a lookup.
                    references: m.in_reply_to[m.in_reply_to.len().saturating_sub(crate::email::MAX_REFERENCES)..]
                        .to_vec(),
                    conversation_id_hint: None,
                },
                action: UpdateAction::Append(message),
            })
        })
        .collect())
}

/// A sender's value cut down for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

// serde_json's own messages already name the field ("unknown field `x`", "missing field `id`")
// and the position; an untagged enum would hide them, so objects and arrays are parsed apart,
// and an array item by item, so that one bad item fails alone.
fn parse_messages(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
) -> Result<Vec<Result<WebhookMessage, AdapterError>>, AdapterError> {
    let value: serde_json::Value =
        serde::Deserialize::deserialize(&mut *de).map_err(|e| AdapterError::Malformed(e.to_string()))?;
    de.end().map_err(|e| AdapterError::Malformed(e.to_string()))?;
    match value {
        serde_json::Value::Array(items) => Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| serde_json::from_value(item).map_err(|e| AdapterError::Malformed(format!("[{i}]: {e}"))))
            .collect()),
        value @ serde_json::Value::Object(_) => {
            Ok(vec![serde_json::from_value(value).map_err(|e| AdapterError::Malformed(e.to_string()))])
        }
        _ => Err(AdapterError::Malformed("expected a JSON object or array of objects".into())),
    }
}

#[async_trait]
impl ChannelAdapter for GenericWebhookAdapter {
    fn channel_type(&self) -> ChannelType {
        self.channel_type
    }
    fn adapter_key(&self) -> &str {
        &self.key
    }
    async fn decode(&self, delivery: &Delivery<'_>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        decode_generic(delivery.body, delivery.received_at)
    }
    async fn decode_items(&self, delivery: &Delivery<'_>) -> Result<Vec<DecodedItem>, AdapterError> {
        decode_generic_items(delivery.body, delivery.received_at)
    }

    /// Generic-webhook ids are the source system's own (`"1"`, `"evt-1"`): two sources in one
    /// project may both send `"1"`. Keys (and the ids `inReplyTo` names) are scoped to their
    /// entry point: `<adapterKey>:<externalChannelId>:<id>`, as the chat adapters' keys are.
    /// Only on the `webhook` channel type: elsewhere this adapter stands in for integrators that
    /// normalize payloads themselves and choose keys that are already unique.
    fn refine(&self, update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
        if self.channel_type != ChannelType::Webhook {
            return;
        }
        let scope = |id: &str| format!("{}:{}:{id}", entry_point.adapter_key, entry_point.external_channel_id);
        if let UpdateAction::Append(m) = &mut update.action {
            m.idempotency_key = scope(&m.idempotency_key);
        }
        for reference in &mut update.thread.references {
            *reference = scope(reference);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn decodes_one_message() {
        let body = br#"{"id":"evt-1","conversationKey":"order-7","direction":"inbound",
            "sender":{"id":"u1","displayName":"Ada","primaryEmail":"ada@example.com"},
            "body":"Where is my order?","occurredAt":"2026-02-03T04:05:06Z"}"#;
        let updates = decode_generic(body, now()).unwrap();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].thread.key.as_deref(), Some("order-7"));
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.idempotency_key, "evt-1");
        assert_eq!(m.direction, Direction::Inbound);
        assert_eq!(m.occurred_at.to_rfc3339(), "2026-02-03T04:05:06+00:00");
        assert_eq!(m.sender.display_name.as_deref(), Some("Ada"));
    }

    #[test]
    fn decodes_an_array_and_defaults_time() {
        let body = br#"[{"id":"a","direction":"outbound","body":"x"},{"id":"b","direction":"inbound","body":"y"}]"#;
        let updates = decode_generic(body, now()).unwrap();
        assert_eq!(updates.len(), 2);
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.occurred_at, now());
    }

    fn fingerprint(body: &[u8], received_at: DateTime<Utc>) -> String {
        let updates = decode_generic(body, received_at).unwrap();
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        m.fingerprint.clone().expect("set by the adapter")
    }

    #[test]
    fn the_fingerprint_takes_occurred_at_as_sent() {
        let utc = br#"{"id":"e","direction":"inbound","body":"hi","occurredAt":"2026-02-03T04:05:06Z"}"#;
        let later = now() + chrono::Duration::hours(5);
        // A redelivery, received later: the same message.
        assert_eq!(fingerprint(utc, now()), fingerprint(utc, later));
        // The same instant written another way is what the sender sent: another fingerprint.
        let offset = br#"{"id":"e","direction":"inbound","body":"hi","occurredAt":"2026-02-03T05:05:06+01:00"}"#;
        assert_ne!(fingerprint(utc, now()), fingerprint(offset, now()));
        // Without occurredAt, the receive time (a default) is left out.
        let timeless = br#"{"id":"e","direction":"inbound","body":"hi"}"#;
        assert_eq!(fingerprint(timeless, now()), fingerprint(timeless, later));
        let updates = decode_generic(timeless, now()).unwrap();
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.fingerprint.as_deref(), Some(content_fingerprint(m, None).as_str()));
        let edited = br#"{"id":"e","direction":"inbound","body":"hi!"}"#;
        assert_ne!(fingerprint(timeless, now()), fingerprint(edited, now()));
    }

    #[test]
    fn a_bad_occurred_at_names_the_item() {
        let err = decode_generic(br#"{"id":"1","direction":"inbound","body":"x","occurredAt":"yesterday"}"#, now())
            .unwrap_err();
        assert!(err.to_string().contains("occurredAt `yesterday`"), "{err}");
        let body = br#"[{"id":"1","direction":"inbound","body":"x"},{"id":"2","direction":"inbound","body":"y","occurredAt":"2026-13-01T00:00:00Z"}]"#;
        let err = decode_generic(body, now()).unwrap_err();
        assert_eq!(err.reason_code(), "malformed_payload");
        assert!(err.to_string().contains("[1]: occurredAt"), "{err}");
    }

    #[test]
    fn errors_name_the_problem() {
        let err = decode_generic(b"{not json", now()).unwrap_err();
        assert_eq!(err.reason_code(), "malformed_payload");
        let err = decode_generic(br#"{"direction":"inbound","body":"x"}"#, now()).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err = decode_generic(br#"{"id":"1","direction":"sideways","body":"x"}"#, now()).unwrap_err();
        assert!(err.to_string().contains("sideways"), "{err}");
        let err = decode_generic(br#"{"id":" ","direction":"inbound","body":"x"}"#, now()).unwrap_err();
        assert_eq!(err, AdapterError::Missing("id".into()));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(decode_generic(&big, now()).unwrap_err().reason_code(), "payload_too_large");
        assert!(decode_generic(b"42", now()).is_err());
    }
}
