//! Slack Events API adapter (`chat.slack`).
//!
//! Maps `event_callback` envelopes carrying `message` events:
//!
//! - plain messages, `file_share`, `thread_broadcast`, `me_message` and `bot_message` →
//!   [`UpdateAction::Append`]. One conversation per Slack thread: the thread key is
//!   `{channel}:{thread_ts}`, or `{channel}:{ts}` for a root message, so replies join the
//!   conversation their root started (the channel is part of the key because `ts` values are only
//!   unique within a channel, and several channels may resolve to one entry point);
//! - `message_changed` → [`UpdateAction::Edit`] of the original message (skipped when the text
//!   did not change, as for link unfurls, language detection and metadata updates);
//! - `message_deleted` → [`UpdateAction::Delete`].
//!
//! Messages with a `bot_id`, of subtype `bot_message`, from the app's own bot user (the
//! `authorizations[]` entry with `is_bot: true`), from [`SlackConfig::bot_user_id`], or — in
//! [`crate::ChannelAdapter::refine`] — from a user named by the entry point's `metadata["botUserId"]` (a
//! string or an array of strings) are [`Direction::Outbound`]: never customer messages.
//!
//! Everything else decodes to no updates: `url_verification` (answered by the gateway),
//! `app_rate_limited`, reactions, `app_mention` (it duplicates a `message` event), channel joins,
//! topic changes, `message_replied` (also when Slack sends it without its subtype, a known Slack
//! bug: a top-level `message` event carrying a nested `message` object), and other hidden
//! subtypes. The idempotency key is `slack:{channel}:{ts}`; the channel id is the
//! `external_channel_id`, with the delivery envelope's entry point as fallback.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_size, clip, metadata_strings, non_empty, parse_json};
use crate::{
    AdapterError, Attachment, Delivery, Direction, EntryPointInfo, NormalizedMessage, NormalizedUpdate, Sender,
    ThreadRef, UpdateAction,
};

/// The adapter key (second word of the routing key `chat.slack`).
pub const ADAPTER_KEY: &str = "slack";

/// The entry point metadata key naming our bot's Slack user id(s); see [`refine`].
pub const BOT_USER_ID_KEY: &str = "botUserId";

/// Configuration of the Slack adapter. Per-entry-point settings come through [`refine`] instead:
/// the runtime registers one `SlackAdapter::default()` for all entry points.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackConfig {
    /// The Slack user id of our own bot (e.g. `U0442US8QGH`, the `authorizations[].user_id` of
    /// the app). Messages from it are outbound even when Slack sends them without `bot_id`.
    pub bot_user_id: Option<String>,
}

chat_adapter!(
    /// The Slack Events API adapter.
    SlackAdapter(SlackConfig), refine
);

/// Mark a message from one of the entry point's bot users (`metadata["botUserId"]`, a string or
/// an array of strings) as outbound. Edits, deletions and statuses are left alone.
pub fn refine(update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
    let UpdateAction::Append(message) = &mut update.action else { return };
    let Some(sender) = message.sender.id.as_deref() else { return };
    if metadata_strings(entry_point.metadata, BOT_USER_ID_KEY).iter().any(|bot| bot == sender) {
        message.direction = Direction::Outbound;
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    team_id: Option<String>,
    event_id: Option<String>,
    event: Option<Value>,
    /// Read leniently: a hint only, never a reason to refuse the event.
    authorizations: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageEvent {
    subtype: Option<String>,
    hidden: Option<bool>,
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
    match envelope.kind.as_str() {
        "event_callback" => {}
        // Answered by the gateway / nothing to store.
        "url_verification" | "app_rate_limited" => return Ok(vec![]),
        // An envelope type Slack may add later: skipped, as long as it is Slack's (every
        // Events API envelope names its workspace). Anything else is not a Slack payload at all
        // (another provider's webhook routed to `chat.slack`): refused, not silently acked.
        _ if envelope.team_id.is_some() => return Ok(vec![]),
        other => {
            return Err(AdapterError::Malformed(format!(
                "not a Slack Events API payload (type `{other}` and no team_id)"
            )))
        }
    }
    let event = envelope.event.ok_or_else(|| AdapterError::Missing("event".into()))?;
    if event.get("type").and_then(Value::as_str) != Some("message") {
        // reaction_added, member_joined_channel, app_mention (duplicates a message event), ...
        return Ok(vec![]);
    }
    let event: MessageEvent =
        serde_json::from_value(event).map_err(|e| AdapterError::Malformed(format!("Slack event: {e}")))?;
    let channel = non_empty(event.channel.as_deref()).ok_or_else(|| AdapterError::Missing("event.channel".into()))?;
    let ctx = Context { channel: &channel, own_bot_users: own_bot_users(envelope.authorizations.as_ref(), config) };

    let mut meta = Map::new();
    insert(&mut meta, "teamId", envelope.team_id.as_deref());
    insert(&mut meta, "eventId", envelope.event_id.as_deref());
    insert(&mut meta, "channelType", event.channel_type.as_deref());

    let update = match event.subtype.as_deref() {
        // `message_replied` arrives without its subtype (a documented Slack bug); it only says a
        // thread got a reply, which arrives as its own event.
        None if event.message.is_some() => return Ok(vec![]),
        None | Some("file_share" | "thread_broadcast" | "me_message" | "bot_message") => {
            if event.hidden == Some(true) {
                return Ok(vec![]);
            }
            append(&event, &ctx, meta)?
        }
        Some("message_changed") => match edit(&event, &ctx, delivery)? {
            Some(update) => update,
            None => return Ok(vec![]),
        },
        Some("message_deleted") => delete(&event, &ctx, delivery)?,
        // channel_join, channel_topic, message_replied, pinned_item, ekm_access_denied, ...
        Some(_) => return Ok(vec![]),
    };
    Ok(vec![update])
}

struct Context<'a> {
    channel: &'a str,
    own_bot_users: Vec<String>,
}

/// Our own bot users: the configured one and the app's bot user the payload authorizes.
fn own_bot_users(authorizations: Option<&Value>, config: &SlackConfig) -> Vec<String> {
    authorizations
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("is_bot").and_then(Value::as_bool) == Some(true))
        .filter_map(|a| non_empty(a.get("user_id").and_then(Value::as_str)))
        .chain(non_empty(config.bot_user_id.as_deref()))
        .collect()
}

fn append(
    event: &MessageEvent,
    ctx: &Context<'_>,
    mut meta: Map<String, Value>,
) -> Result<NormalizedUpdate, AdapterError> {
    let channel = ctx.channel;
    let ts = non_empty(event.ts.as_deref()).ok_or_else(|| AdapterError::Missing("event.ts".into()))?;
    let occurred_at = parse_slack_ts(&ts, "event.ts")?;
    let thread_ts = non_empty(event.thread_ts.as_deref());
    let root = thread_ts.clone().unwrap_or_else(|| ts.clone());
    let references = match &thread_ts {
        Some(root) if *root != ts => vec![message_key(channel, root)],
        _ => vec![],
    };

    let user = non_empty(event.user.as_deref());
    let bot_id = non_empty(event.bot_id.as_deref());
    let is_own_bot = user.as_ref().is_some_and(|u| ctx.own_bot_users.contains(u));
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
            url: non_empty(f.url_private.as_deref()),
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
        thread: ThreadRef { key: Some(thread_key(channel, &root)), references, conversation_id_hint: None },
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
            fingerprint: None,
        }),
    })
}

fn edit(
    event: &MessageEvent,
    ctx: &Context<'_>,
    delivery: &Delivery<'_>,
) -> Result<Option<NormalizedUpdate>, AdapterError> {
    let channel = ctx.channel;
    let message = event.message.as_deref().ok_or_else(|| AdapterError::Missing("event.message".into()))?;
    let previous = event.previous_message.as_deref();
    // Some payloads (bolt-python's own test event, shaped after real ones) leave `ts` out of the
    // new `message`; the previous version names the same message.
    let ts = non_empty(message.ts.as_deref())
        .or_else(|| previous.and_then(|p| non_empty(p.ts.as_deref())))
        .ok_or_else(|| AdapterError::Missing("event.message.ts".into()))?;
    let text = message.text.clone().unwrap_or_default();
    if let Some(previous) = previous {
        if previous.text.as_deref().unwrap_or_default() == text {
            // Unfurls, language detection and metadata updates also send message_changed.
            return Ok(None);
        }
    }
    let edited_at = match message.edited.as_ref().and_then(|e| non_empty(e.ts.as_deref())) {
        Some(edit_ts) => parse_slack_ts(&edit_ts, "event.message.edited.ts")?,
        None => event_time(event, delivery)?,
    };
    let root = non_empty(message.thread_ts.as_deref())
        .or_else(|| previous.and_then(|p| non_empty(p.thread_ts.as_deref())))
        .unwrap_or_else(|| ts.clone());
    Ok(Some(NormalizedUpdate {
        external_channel_id: Some(channel.to_owned()),
        fallback_channel_ids: vec![],
        thread: ThreadRef {
            references: vec![message_key(channel, &root)],
            key: Some(thread_key(channel, &root)),
            conversation_id_hint: None,
        },
        action: UpdateAction::Edit { idempotency_key: message_key(channel, &ts), body: text, edited_at },
    }))
}

fn delete(event: &MessageEvent, ctx: &Context<'_>, delivery: &Delivery<'_>) -> Result<NormalizedUpdate, AdapterError> {
    let channel = ctx.channel;
    let previous = event.previous_message.as_deref();
    let deleted_ts = non_empty(event.deleted_ts.as_deref())
        .or_else(|| previous.and_then(|p| non_empty(p.ts.as_deref())))
        .ok_or_else(|| AdapterError::Missing("event.deleted_ts".into()))?;
    let root = previous.and_then(|p| non_empty(p.thread_ts.as_deref())).unwrap_or_else(|| deleted_ts.clone());
    Ok(NormalizedUpdate {
        external_channel_id: Some(channel.to_owned()),
        fallback_channel_ids: vec![],
        thread: ThreadRef {
            references: vec![message_key(channel, &root)],
            key: Some(thread_key(channel, &root)),
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
        Some(ts) => parse_slack_ts(&ts, "event.ts"),
        None => Ok(delivery.received_at),
    }
}

/// The idempotency key of the Slack message `ts` in `channel`.
pub fn message_key(channel: &str, ts: &str) -> String {
    format!("slack:{channel}:{ts}")
}

/// The thread key of the conversation whose root message is `root_ts` in `channel`.
pub fn thread_key(channel: &str, root_ts: &str) -> String {
    format!("{channel}:{root_ts}")
}

/// Parse a Slack timestamp (`"1355517523.000005"`: unix seconds, a dot, microseconds); `field`
/// names it in the error.
pub fn parse_slack_ts(ts: &str, field: &str) -> Result<DateTime<Utc>, AdapterError> {
    let bad = || AdapterError::Malformed(format!("{field} `{}` is not a Slack ts (`seconds.micros`)", clip(ts, 40)));
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

fn insert(meta: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = non_empty(value) {
        meta.insert(key.to_owned(), Value::String(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str, config: &SlackConfig) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        crate::chat::decode_bare(body, config, decode)
    }

    #[test]
    fn parses_slack_ts() {
        assert_eq!(parse_slack_ts("1355517523.000005", "ts").unwrap().to_rfc3339(), "2012-12-14T20:38:43.000005+00:00");
        assert_eq!(parse_slack_ts("1355517523", "ts").unwrap().timestamp(), 1355517523);
        for bad in ["", ".5", "abc.000001", "1.2.3", "-1.000000", "1355517523.0000000001", "99999999999999.0"] {
            assert!(parse_slack_ts(bad, "ts").is_err(), "{bad}");
        }
    }

    #[test]
    fn root_message_keys_its_own_thread() {
        let body = r#"{"type":"event_callback","team_id":"T1","event":{"type":"message","channel":"C1","user":"U1",
            "text":"hi","ts":"1700000000.000100"}}"#;
        let updates = run(body, &SlackConfig::default()).unwrap();
        assert_eq!(updates[0].thread.key.as_deref(), Some("C1:1700000000.000100"));
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
    fn an_edit_without_message_ts_names_the_previous_message() {
        let body = r#"{"type":"event_callback","event":{"type":"message","subtype":"message_changed","channel":"C1",
            "ts":"3.000000","message":{"text":"new","edited":{"ts":"3.000000"}},
            "previous_message":{"text":"old","ts":"2.000000","thread_ts":"1.000000"}}}"#;
        let updates = run(body, &SlackConfig::default()).unwrap();
        let UpdateAction::Edit { idempotency_key, body, .. } = &updates[0].action else { panic!() };
        assert_eq!(idempotency_key, "slack:C1:2.000000");
        assert_eq!(body, "new");
        assert_eq!(updates[0].thread.key.as_deref(), Some("C1:1.000000"), "the thread of the previous version");
        let neither = r#"{"type":"event_callback","event":{"type":"message","subtype":"message_changed","channel":"C1",
            "message":{"text":"new"},"previous_message":{"text":"old"}}}"#;
        assert_eq!(run(neither, &SlackConfig::default()).unwrap_err().reason_code(), "missing_field");
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
