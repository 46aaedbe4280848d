//! Slack Events API adapter (`chat.slack`).
//!
//! Maps `event_callback` envelopes carrying `message` events:
//!
//! - plain messages, `file_share`, `thread_broadcast`, `me_message` and `bot_message` →
//!   [`UpdateAction::Append`]; one conversation per Slack thread: the thread key is `thread_ts`,
//!   or a root message's own `ts`, so replies join the conversation their root started;
//! - `message_changed` → [`UpdateAction::Edit`] of the original message (skipped when the text
//!   did not change, as for link unfurls);
//! - `message_deleted` → [`UpdateAction::Delete`].
//!
//! Messages with a `bot_id`, of subtype `bot_message`, or from the configured own bot user are
//! [`Direction::Outbound`]: they are never counted as customer messages. Everything else
//! (`url_verification`, `app_rate_limited`, reactions, channel joins, topic changes, ...) decodes
//! to no updates. The idempotency key is `slack:{channel}:{ts}`; the channel id is the
//! `external_channel_id`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_size, non_empty, parse_json};
use crate::{
    AdapterError, Attachment, ChannelAdapter, ChannelType, Delivery, Direction, NormalizedMessage, NormalizedUpdate,
    Sender, ThreadRef, UpdateAction,
};

/// The adapter key (second word of the routing key `chat.slack`).
pub const ADAPTER_KEY: &str = "slack";

/// Per-entry-point configuration of the Slack adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackConfig {
    /// The Slack user id of our own bot (e.g. `U0442US8QGH`, the `authorizations[].user_id` of
    /// the app). Messages from it are outbound even when Slack sends them without `bot_id`.
    pub bot_user_id: Option<String>,
}

/// The Slack Events API adapter.
#[derive(Debug, Clone, Default)]
pub struct SlackAdapter {
    config: SlackConfig,
}

impl SlackAdapter {
    pub fn new(config: SlackConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &SlackConfig {
        &self.config
    }
}

#[async_trait]
impl ChannelAdapter for SlackAdapter {
    fn channel_type(&self) -> ChannelType {
        ChannelType::Chat
    }
    fn adapter_key(&self) -> &str {
        ADAPTER_KEY
    }
    async fn decode(&self, delivery: &Delivery<'_>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        decode(delivery.body, delivery, &self.config)
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    team_id: Option<String>,
    event_id: Option<String>,
    event: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageEvent {
    subtype: Option<String>,
    channel: Option<String>,
    user: Option<String>,
    bot_id: Option<String>,
    username: Option<String>,
    text: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
    channel_type: Option<String>,
    client_msg_id: Option<String>,
    user_profile: Option<UserProfile>,
    bot_profile: Option<BotProfile>,
    files: Option<Vec<SlackFile>>,
    message: Option<Box<MessageEvent>>,
    previous_message: Option<Box<MessageEvent>>,
    deleted_ts: Option<String>,
    edited: Option<Edited>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserProfile {
    display_name: Option<String>,
    real_name: Option<String>,
    name: Option<String>,
    image_72: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BotProfile {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SlackFile {
    id: Option<String>,
    name: Option<String>,
    title: Option<String>,
    mimetype: Option<String>,
    size: Option<u64>,
    url_private: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Edited {
    ts: Option<String>,
}

/// Pure decode function, exposed for fuzzing.
pub fn decode(
    body: &[u8],
    delivery: &Delivery<'_>,
    config: &SlackConfig,
) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    check_size(body)?;
    let envelope: Envelope = parse_json("Slack", body)?;
    if envelope.kind != "event_callback" {
        // url_verification (answered by the gateway), app_rate_limited, ...
        return Ok(vec![]);
    }
    let event = envelope.event.ok_or_else(|| AdapterError::Missing("event".into()))?;
    if event.get("type").and_then(Value::as_str) != Some("message") {
        // reaction_added, member_joined_channel, app_mention (duplicates a message event), ...
        return Ok(vec![]);
    }
    let event: MessageEvent =
        serde_json::from_value(event).map_err(|e| AdapterError::Malformed(format!("Slack message event: {e}")))?;
    let channel = non_empty(event.channel.as_deref()).ok_or_else(|| AdapterError::Missing("event.channel".into()))?;

    let mut meta = Map::new();
    insert(&mut meta, "teamId", envelope.team_id.as_deref());
    insert(&mut meta, "eventId", envelope.event_id.as_deref());
    insert(&mut meta, "channelType", event.channel_type.as_deref());

    let update = match event.subtype.as_deref() {
        None | Some("file_share" | "thread_broadcast" | "me_message" | "bot_message") => {
            append(&event, &channel, meta, config)?
        }
        Some("message_changed") => match edit(&event, &channel, delivery)? {
            Some(update) => update,
            None => return Ok(vec![]),
        },
        Some("message_deleted") => delete(&event, &channel, delivery)?,
        // channel_join, channel_topic, message_replied, pinned_item, ekm_access_denied, ...
        Some(_) => return Ok(vec![]),
    };
    Ok(vec![update])
}

fn append(
    event: &MessageEvent,
    channel: &str,
    mut meta: Map<String, Value>,
    config: &SlackConfig,
) -> Result<NormalizedUpdate, AdapterError> {
    let ts = non_empty(event.ts.as_deref()).ok_or_else(|| AdapterError::Missing("event.ts".into()))?;
    let occurred_at = parse_slack_ts(&ts)?;
    let thread_ts = non_empty(event.thread_ts.as_deref());
    let thread_key = thread_ts.clone().unwrap_or_else(|| ts.clone());
    let references = match &thread_ts {
        Some(root) if *root != ts => vec![message_key(channel, root)],
        _ => vec![],
    };

    let user = non_empty(event.user.as_deref());
    let bot_id = non_empty(event.bot_id.as_deref());
    let is_own_bot = matches!((&user, &config.bot_user_id), (Some(u), Some(own)) if u == own);
    let direction = if bot_id.is_some() || event.subtype.as_deref() == Some("bot_message") || is_own_bot {
        Direction::Outbound
    } else {
        Direction::Inbound
    };

    let profile = event.user_profile.as_ref();
    let display_name = profile
        .and_then(|p| {
            non_empty(p.display_name.as_deref())
                .or_else(|| non_empty(p.real_name.as_deref()))
                .or_else(|| non_empty(p.name.as_deref()))
        })
        .or_else(|| {
            bot_id.as_ref().and_then(|_| {
                event
                    .bot_profile
                    .as_ref()
                    .and_then(|b| non_empty(b.name.as_deref()))
                    .or_else(|| non_empty(event.username.as_deref()))
            })
        });
    let sender = Sender {
        id: user.clone().or_else(|| bot_id.clone()),
        display_name,
        primary_email: None,
        profile_image_url: profile.and_then(|p| non_empty(p.image_72.as_deref())),
    };

    let attachments = event
        .files
        .iter()
        .flatten()
        .map(|f| Attachment {
            filename: non_empty(f.name.as_deref()).or_else(|| non_empty(f.title.as_deref())),
            content_type: non_empty(f.mimetype.as_deref()),
            size: f.size,
            content_id: non_empty(f.id.as_deref()),
            sha256: None,
            url: non_empty(f.url_private.as_deref()),
            inline: false,
            ..Default::default()
        })
        .collect();

    insert(&mut meta, "subtype", event.subtype.as_deref());
    insert(&mut meta, "clientMsgId", event.client_msg_id.as_deref());
    insert(&mut meta, "botId", bot_id.as_deref());
    insert(&mut meta, "threadTs", thread_ts.as_deref());

    Ok(NormalizedUpdate {
        external_channel_id: Some(channel.to_owned()),
        fallback_channel_ids: vec![],
        thread: ThreadRef { key: Some(thread_key), references, conversation_id_hint: None },
        action: UpdateAction::Append(NormalizedMessage {
            idempotency_key: message_key(channel, &ts),
            direction,
            sender,
            subject: None,
            body: event.text.clone().unwrap_or_default(),
            attachments,
            occurred_at,
            is_auto_reply: false,
            metadata: meta,
        }),
    })
}

fn edit(
    event: &MessageEvent,
    channel: &str,
    delivery: &Delivery<'_>,
) -> Result<Option<NormalizedUpdate>, AdapterError> {
    let message = event.message.as_deref().ok_or_else(|| AdapterError::Missing("event.message".into()))?;
    let ts = non_empty(message.ts.as_deref()).ok_or_else(|| AdapterError::Missing("event.message.ts".into()))?;
    let text = message.text.clone().unwrap_or_default();
    if let Some(previous) = event.previous_message.as_deref() {
        if previous.text.as_deref().unwrap_or_default() == text {
            // Unfurls, language detection and metadata updates also send message_changed.
            return Ok(None);
        }
    }
    let edited_at = match message.edited.as_ref().and_then(|e| non_empty(e.ts.as_deref())) {
        Some(edit_ts) => parse_slack_ts(&edit_ts)?,
        None => event_time(event, delivery)?,
    };
    let thread_key = non_empty(message.thread_ts.as_deref()).unwrap_or_else(|| ts.clone());
    Ok(Some(NormalizedUpdate {
        external_channel_id: Some(channel.to_owned()),
        fallback_channel_ids: vec![],
        thread: ThreadRef {
            references: vec![message_key(channel, &thread_key)],
            key: Some(thread_key),
            conversation_id_hint: None,
        },
        action: UpdateAction::Edit { idempotency_key: message_key(channel, &ts), body: text, edited_at },
    }))
}

fn delete(event: &MessageEvent, channel: &str, delivery: &Delivery<'_>) -> Result<NormalizedUpdate, AdapterError> {
    let previous = event.previous_message.as_deref();
    let deleted_ts = non_empty(event.deleted_ts.as_deref())
        .or_else(|| previous.and_then(|p| non_empty(p.ts.as_deref())))
        .ok_or_else(|| AdapterError::Missing("event.deleted_ts".into()))?;
    let thread_key = previous.and_then(|p| non_empty(p.thread_ts.as_deref())).unwrap_or_else(|| deleted_ts.clone());
    Ok(NormalizedUpdate {
        external_channel_id: Some(channel.to_owned()),
        fallback_channel_ids: vec![],
        thread: ThreadRef {
            references: vec![message_key(channel, &thread_key)],
            key: Some(thread_key),
            conversation_id_hint: None,
        },
        action: UpdateAction::Delete {
            idempotency_key: message_key(channel, &deleted_ts),
            deleted_at: event_time(event, delivery)?,
        },
    })
}

/// The event's own `ts` (when the edit or deletion happened), else the delivery's receive time.
fn event_time(event: &MessageEvent, delivery: &Delivery<'_>) -> Result<DateTime<Utc>, AdapterError> {
    match non_empty(event.ts.as_deref()) {
        Some(ts) => parse_slack_ts(&ts),
        None => Ok(delivery.received_at),
    }
}

/// The idempotency key of the Slack message `ts` in `channel`.
pub fn message_key(channel: &str, ts: &str) -> String {
    format!("slack:{channel}:{ts}")
}

/// Parse a Slack timestamp (`"1355517523.000005"`: unix seconds, a dot, microseconds).
pub fn parse_slack_ts(ts: &str) -> Result<DateTime<Utc>, AdapterError> {
    let bad = || AdapterError::Malformed(format!("Slack ts `{}` is not `seconds.micros`", truncate(ts, 40)));
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if secs.is_empty() || secs.len() > 12 || frac.len() > 9 {
        return Err(bad());
    }
    if !secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    DateTime::from_timestamp(secs, nanos).ok_or_else(bad)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

fn insert(meta: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = non_empty(value) {
        meta.insert(key.to_owned(), Value::String(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Headers;

    fn delivery<'a>(body: &'a [u8], headers: &'a Headers) -> Delivery<'a> {
        Delivery { body, headers, external_channel_id: None, received_at: "2026-01-01T00:00:00Z".parse().unwrap() }
    }

    fn run(body: &str, config: &SlackConfig) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        let headers = Headers::new();
        decode(body.as_bytes(), &delivery(body.as_bytes(), &headers), config)
    }

    #[test]
    fn parses_slack_ts() {
        assert_eq!(parse_slack_ts("1355517523.000005").unwrap().to_rfc3339(), "2012-12-14T20:38:43.000005+00:00");
        assert_eq!(parse_slack_ts("1355517523").unwrap().timestamp(), 1355517523);
        for bad in ["", ".5", "abc.000001", "1.2.3", "-1.000000", "1355517523.0000000001", "99999999999999.0"] {
            assert!(parse_slack_ts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn root_message_keys_its_own_thread() {
        let body = r#"{"type":"event_callback","team_id":"T1","event":{"type":"message","channel":"C1","user":"U1",
            "text":"hi","ts":"1700000000.000100"}}"#;
        let updates = run(body, &SlackConfig::default()).unwrap();
        assert_eq!(updates[0].thread.key.as_deref(), Some("1700000000.000100"));
        assert!(updates[0].thread.references.is_empty());
        assert_eq!(updates[0].idempotency_key(), "slack:C1:1700000000.000100");
    }

    #[test]
    fn own_bot_user_is_outbound() {
        let body = r#"{"type":"event_callback","event":{"type":"message","channel":"C1","user":"UBOT","text":"hi","ts":"1.000001"}}"#;
        let config = SlackConfig { bot_user_id: Some("UBOT".into()) };
        let UpdateAction::Append(m) = &run(body, &config).unwrap()[0].action else { panic!() };
        assert_eq!(m.direction, Direction::Outbound);
        let UpdateAction::Append(m) = &run(body, &SlackConfig::default()).unwrap()[0].action else { panic!() };
        assert_eq!(m.direction, Direction::Inbound);
    }

    #[test]
    fn unchanged_text_edit_is_skipped() {
        let body = r#"{"type":"event_callback","event":{"type":"message","subtype":"message_changed","channel":"C1",
            "ts":"2.000000","message":{"text":"same","ts":"1.000000"},"previous_message":{"text":"same","ts":"1.000000"}}}"#;
        assert!(run(body, &SlackConfig::default()).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_problem() {
        let cfg = SlackConfig::default();
        assert!(run("{", &cfg).unwrap_err().to_string().contains("Slack payload"));
        assert!(run(r#"{"event":{}}"#, &cfg).unwrap_err().to_string().contains("missing field `type`"));
        assert_eq!(run(r#"{"type":"event_callback"}"#, &cfg).unwrap_err(), AdapterError::Missing("event".into()));
        let no_channel = r#"{"type":"event_callback","event":{"type":"message","ts":"1.0"}}"#;
        assert_eq!(run(no_channel, &cfg).unwrap_err(), AdapterError::Missing("event.channel".into()));
        let bad_ts = r#"{"type":"event_callback","event":{"type":"message","channel":"C","ts":"soon"}}"#;
        assert!(run(bad_ts, &cfg).unwrap_err().to_string().contains("soon"));
        let wrong_type = r#"{"type":"event_callback","event":{"type":"message","channel":"C","ts":5}}"#;
        assert_eq!(run(wrong_type, &cfg).unwrap_err().reason_code(), "malformed_payload");
    }
}
