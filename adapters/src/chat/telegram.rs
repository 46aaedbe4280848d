//! Telegram Bot API adapter (`chat.telegram`).
//!
//! Maps one webhook [`Update`](https://core.telegram.org/bots/api#update): `message` →
//! [`UpdateAction::Append`], `edited_message` → [`UpdateAction::Edit`]. Every other update kind
//! (callback and inline queries, channel posts, member updates, polls, ...) decodes to no
//! updates, and so do service messages (members joining or leaving, pinned messages, chat title
//! changes, ...), which carry no content of their own. One conversation per chat: the thread key
//! and `external_channel_id` are the chat id; the delivery envelope's entry point (typically the
//! bot) is the fallback candidate, so private chats resolve to the bot's entry point. The
//! idempotency key is `telegram:{chat_id}:{message_id}` (message ids are per chat).
//!
//! Photos (the largest size), documents, audio, voice notes, videos, video notes and stickers
//! become attachment metadata with the Bot API `file_id` as `content_id` (the runtime fetches
//! content with `getFile`; no URL can be built without the bot token). Locations, venues and
//! contacts become a one-line text body. An edit that changes no text (live-location updates,
//! media replaced without caption) decodes to no updates rather than blanking the stored body.
//!
//! Direction: a message `from` a bot (`from.is_bot`; not the placeholder `from` of a message
//! sent on behalf of a chat, whose sender is that `sender_chat`), from [`TelegramConfig::bot_user_id`] or —
//! in [`refine`] — from the entry point's `metadata["botId"]` / `metadata["botUsername"]` is
//! outbound. Telegram never delivers a bot's own messages to its webhook, so this matters for
//! publishers that also publish what the bot sent (the `Message` that `sendMessage` returns).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_size, metadata_strings, non_empty, parse_json, unix_time};
use crate::{
    AdapterError, Attachment, Delivery, Direction, EntryPointInfo, NormalizedMessage, NormalizedUpdate, Sender,
    ThreadRef, UpdateAction,
};

/// The adapter key (second word of the routing key `chat.telegram`).
pub const ADAPTER_KEY: &str = "telegram";

/// Entry point metadata keys read by [`refine`].
pub const BOT_ID_KEY: &str = "botId";
pub const BOT_USERNAME_KEY: &str = "botUsername";

/// Configuration of the Telegram adapter. Per-entry-point settings come through [`refine`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelegramConfig {
    /// Our bot's user id (the number before `:` in its token). Its messages are outbound; they
    /// already are through `from.is_bot`, this only guards against payloads that omit it.
    pub bot_user_id: Option<i64>,
}

chat_adapter!(
    /// The Telegram Bot API adapter.
    TelegramAdapter(TelegramConfig), refine
);

/// Mark a message from the entry point's own bot as outbound: `metadata["botId"]` (a number or a
/// string, or an array of them) matches the sender id, or `metadata["botUsername"]` (with or
/// without `@`, case-insensitive) matches the sender's username.
pub fn refine(update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
    let UpdateAction::Append(message) = &mut update.action else { return };
    let by_id = message
        .sender
        .id
        .as_deref()
        .is_some_and(|id| metadata_strings(entry_point.metadata, BOT_ID_KEY).iter().any(|bot| bot == id));
    let username = message.metadata.get("username").and_then(Value::as_str);
    let by_name = username.is_some_and(|name| {
        metadata_strings(entry_point.metadata, BOT_USERNAME_KEY)
            .iter()
            .any(|bot| bot.trim_start_matches('@').eq_ignore_ascii_case(name.trim_start_matches('@')))
    });
    if by_id || by_name {
        message.direction = Direction::Outbound;
    }
}

#[derive(Deserialize)]
struct Update {
    update_id: Option<i64>,
    message: Option<Message>,
    edited_message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    message_id: i64,
    date: i64,
    chat: Chat,
    from: Option<User>,
    sender_chat: Option<Chat>,
    text: Option<String>,
    caption: Option<String>,
    photo: Option<Vec<PhotoSize>>,
    document: Option<FileMeta>,
    audio: Option<FileMeta>,
    voice: Option<FileMeta>,
    video: Option<FileMeta>,
    video_note: Option<FileMeta>,
    sticker: Option<FileMeta>,
    location: Option<Location>,
    venue: Option<Venue>,
    contact: Option<Contact>,
    edit_date: Option<i64>,
    message_thread_id: Option<i64>,
    reply_to_message: Option<ReplyRef>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
    first_name: Option<String>,
    last_name: Option<String>,
    username: Option<String>,
    language_code: Option<String>,
}

#[derive(Deserialize)]
struct FileMeta {
    file_id: String,
    file_name: Option<String>,
    mime_type: Option<String>,
    file_size: Option<u64>,
    /// Stickers only.
    is_animated: Option<bool>,
    is_video: Option<bool>,
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct PhotoSize {
    file_id: String,
    #[serde(default)]
    width: u64,
    #[serde(default)]
    height: u64,
    file_size: Option<u64>,
}

#[derive(Deserialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

#[derive(Deserialize)]
struct Venue {
    location: Location,
    title: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct Contact {
    phone_number: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[derive(Deserialize)]
struct ReplyRef {
    message_id: i64,
    chat: Option<ChatId>,
}

#[derive(Deserialize)]
struct ChatId {
    id: i64,
}

/// Pure decode function, exposed for fuzzing. Every chat adapter's `decode` has this shape; this
/// one needs nothing from the delivery besides the body.
pub fn decode(
    body: &[u8],
    _delivery: &Delivery<'_>,
    config: &TelegramConfig,
) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    check_size(body)?;
    let update: Update = parse_json("Telegram", body)?;
    // Every Bot API `Update` has one; without it this is not Telegram's payload (a misrouted
    // integration), which must be dead-lettered rather than acked as an event of no interest.
    if update.update_id.is_none() {
        return Err(AdapterError::Malformed("not a Telegram update: no `update_id`".into()));
    }
    if let Some(message) = update.message {
        return Ok(append(message, update.update_id, config)?.into_iter().collect());
    }
    if let Some(message) = update.edited_message {
        return Ok(edit(message)?.into_iter().collect());
    }
    Ok(vec![])
}

fn append(
    message: Message,
    update_id: Option<i64>,
    config: &TelegramConfig,
) -> Result<Option<NormalizedUpdate>, AdapterError> {
    let chat_id = message.chat.id.to_string();
    let occurred_at = unix_time(message.date, "message.date")?;
    let body = body_of(&message);
    let attachments = attachments(&message);
    if body.is_empty() && attachments.is_empty() {
        // Service messages (new_chat_members, pinned_message, ...) and kinds we cannot show.
        return Ok(None);
    }

    // A message sent on behalf of a chat (an anonymous group admin, a linked channel) names
    // that chat in `sender_chat`; its `from` is then a placeholder bot account
    // (`GroupAnonymousBot`, `Channel_Bot`) that stands for a person, not for a bot of ours.
    let on_behalf_of_chat = message.sender_chat.is_some();
    let (sender, direction) = match message.from.as_ref().filter(|_| !on_behalf_of_chat) {
        Some(user) => {
            let name = [user.first_name.as_deref(), user.last_name.as_deref()]
                .into_iter()
                .flatten()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let display_name = non_empty(Some(&name)).or_else(|| non_empty(user.username.as_deref()));
            let own = config.bot_user_id == Some(user.id);
            let direction = if user.is_bot || own { Direction::Outbound } else { Direction::Inbound };
            (Sender { id: Some(user.id.to_string()), display_name, ..Sender::default() }, direction)
        }
        None => {
            // Anonymous group admins and channels post as a chat.
            let chat = message.sender_chat.as_ref().unwrap_or(&message.chat);
            (
                Sender {
                    id: Some(chat.id.to_string()),
                    display_name: non_empty(chat.title.as_deref()),
                    ..Sender::default()
                },
                Direction::Inbound,
            )
        }
    };

    let references = message
        .reply_to_message
        .as_ref()
        .map(|r| vec![message_key(r.chat.as_ref().map_or(message.chat.id, |c| c.id), r.message_id)])
        .unwrap_or_default();

    let mut meta = Map::new();
    if let Some(id) = update_id {
        meta.insert("updateId".into(), Value::from(id));
    }
    if let Some(kind) = non_empty(message.chat.kind.as_deref()) {
        meta.insert("chatType".into(), Value::String(kind));
    }
    if let Some(thread) = message.message_thread_id {
        meta.insert("messageThreadId".into(), Value::from(thread));
    }
    if let Some(user) = &message.from {
        if let Some(username) = non_empty(user.username.as_deref()) {
            meta.insert("username".into(), Value::String(username));
        }
        if let Some(lang) = non_empty(user.language_code.as_deref()) {
            meta.insert("languageCode".into(), Value::String(lang));
        }
    }

    Ok(Some(NormalizedUpdate {
        external_channel_id: Some(chat_id.clone()),
        fallback_channel_ids: Vec::new(),
        thread: ThreadRef { key: Some(chat_id), references, conversation_id_hint: None },
        action: UpdateAction::Append(NormalizedMessage {
            idempotency_key: message_key(message.chat.id, message.message_id),
            direction,
            sender,
            subject: None,
            body,
            attachments,
            occurred_at,
            is_auto_reply: false,
            metadata: meta,
            fingerprint: None,
        }),
    }))
}

fn edit(message: Message) -> Result<Option<NormalizedUpdate>, AdapterError> {
    let chat_id = message.chat.id.to_string();
    let edited_at = match message.edit_date {
        Some(at) => unix_time(at, "edited_message.edit_date")?,
        None => unix_time(message.date, "edited_message.date")?,
    };
    let body = body_of(&message);
    if body.is_empty() {
        // Live-location updates without a location we can show, media swapped without caption.
        return Ok(None);
    }
    Ok(Some(NormalizedUpdate {
        external_channel_id: Some(chat_id.clone()),
        fallback_channel_ids: Vec::new(),
        thread: ThreadRef { key: Some(chat_id), references: vec![], conversation_id_hint: None },
        action: UpdateAction::Edit {
            idempotency_key: message_key(message.chat.id, message.message_id),
            body,
            edited_at,
        },
    }))
}

fn body_of(message: &Message) -> String {
    if let Some(text) = message.text.clone().or_else(|| message.caption.clone()) {
        return text;
    }
    if let Some(venue) = &message.venue {
        let place = [venue.title.as_deref(), venue.address.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.trim().is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        return format!("Location: {place} ({}, {})", venue.location.latitude, venue.location.longitude);
    }
    if let Some(location) = &message.location {
        return format!("Location: ({}, {})", location.latitude, location.longitude);
    }
    if let Some(contact) = &message.contact {
        let name = [contact.first_name.as_deref(), contact.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let phone = contact.phone_number.as_deref().unwrap_or_default();
        return format!("Contact: {name} {phone}").trim().to_owned();
    }
    message.sticker.as_ref().and_then(|s| non_empty(s.emoji.as_deref())).unwrap_or_default()
}

fn attachments(message: &Message) -> Vec<Attachment> {
    let mut out = Vec::new();
    // Photo sizes come smallest first; keep the largest one only.
    if let Some(photo) = message.photo.iter().flatten().max_by_key(|p| (p.width.saturating_mul(p.height), p.file_size))
    {
        out.push(Attachment {
            // Photos sent as photos (not as files) are re-encoded by Telegram as JPEG.
            content_type: Some("image/jpeg".into()),
            size: photo.file_size,
            content_id: Some(photo.file_id.clone()),
            ..Attachment::default()
        });
    }
    // `animation` messages also carry `document`, so it is not read separately.
    for file in
        [&message.document, &message.audio, &message.voice, &message.video, &message.video_note].into_iter().flatten()
    {
        out.push(Attachment {
            filename: non_empty(file.file_name.as_deref()),
            content_type: non_empty(file.mime_type.as_deref()),
            size: file.file_size,
            content_id: Some(file.file_id.clone()),
            ..Attachment::default()
        });
    }
    if let Some(sticker) = &message.sticker {
        // Static stickers are WebP, animated ones TGS (gzipped Lottie), video stickers WebM.
        let content_type = match (sticker.is_animated, sticker.is_video) {
            (Some(true), _) => "application/x-tgsticker",
            (_, Some(true)) => "video/webm",
            _ => "image/webp",
        };
        out.push(Attachment {
            content_type: Some(content_type.into()),
            size: sticker.file_size,
            content_id: Some(sticker.file_id.clone()),
            inline: true,
            ..Attachment::default()
        });
    }
    out
}

/// The idempotency key of Telegram message `message_id` in chat `chat_id`.
pub fn message_key(chat_id: i64, message_id: i64) -> String {
    format!("telegram:{chat_id}:{message_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        crate::chat::decode_bare(body, &TelegramConfig::default(), decode)
    }

    #[test]
    fn reply_references_the_replied_message() {
        let body = r#"{"update_id":1,"message":{"message_id":5,"date":1,"chat":{"id":-100,"type":"group"},
            "from":{"id":7,"is_bot":false,"first_name":"A"},"text":"yes","reply_to_message":{"message_id":4,"date":0,"chat":{"id":-100}}}}"#;
        let updates = run(body).unwrap();
        assert_eq!(updates[0].thread.references, vec!["telegram:-100:4".to_string()]);
        assert_eq!(updates[0].idempotency_key(), "telegram:-100:5");
    }

    #[test]
    fn an_anonymous_group_admin_is_the_group_not_a_bot() {
        let body = r#"{"update_id":1,"message":{"message_id":1,"date":1,"text":"hi",
            "from":{"id":1087968824,"is_bot":true,"first_name":"Group","username":"GroupAnonymousBot"},
            "sender_chat":{"id":-1001,"title":"Customers","type":"supergroup"},
            "chat":{"id":-1001,"title":"Customers","type":"supergroup"}}}"#;
        let updates = run(body).unwrap();
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.direction, Direction::Inbound);
        assert_eq!((m.sender.id.as_deref(), m.sender.display_name.as_deref()), (Some("-1001"), Some("Customers")));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = run(r#"{"update_id":1,"message":{"date":1,"chat":{"id":1}}}"#).unwrap_err();
        assert!(err.to_string().contains("message_id"), "{err}");
        let err =
            run(r#"{"update_id":2,"message":{"message_id":1,"date":99999999999999,"chat":{"id":1}}}"#).unwrap_err();
        assert!(err.to_string().contains("message.date"), "{err}");
        let err = run(r#"{"message":{"message_id":1,"date":1,"chat":{"id":1}}}"#).unwrap_err();
        assert!(err.to_string().contains("update_id"), "{err}");
        assert!(run("{}").is_err(), "an object that is not an Update is not of no interest");
        assert_eq!(run("[]").unwrap_err().reason_code(), "malformed_payload");
        assert!(run(r#"{"update_id":3,"poll":{"id":"x"}}"#).unwrap().is_empty());
    }
}
