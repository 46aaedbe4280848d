//! WhatsApp Cloud API adapter (`chat.whatsapp`).
//!
//! Maps Meta's webhook (`object: whatsapp_business_account`, `entry[].changes[].value`) for the
//! `messages` field. One webhook can carry several entries, changes, messages and statuses; all
//! of them are returned, in payload order.
//!
//! - `messages[]` → inbound [`UpdateAction::Append`]: text; image/document/audio/video/sticker as
//!   attachment metadata (media id as `content_id`, `mime_type`, `sha256`, `filename`); the title
//!   of an interactive `button_reply`/`list_reply` or a template quick-reply `button` as the body;
//!   locations as text. Reactions and system messages are skipped; other types (contacts, order,
//!   unsupported, ...) are appended with a placeholder body so the agent sees something came in.
//! - `statuses[]` (sent/delivered/read/failed) → [`UpdateAction::Status`] on the `wa:{wamid}` key,
//!   with the first error's title as detail.
//!
//! The thread key is the customer's `wa_id` (one conversation per customer and business number);
//! the `external_channel_id` is `metadata.phone_number_id`; the sender's display name comes from
//! `contacts[].profile.name`. Other fields (`account_update`, `message_template_status_update`,
//! `smb_message_echoes`, ...) and account-level `errors` decode to no updates. A payload whose
//! `object` is not `whatsapp_business_account` is refused as [`AdapterError::Unsupported`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_size, non_empty, parse_json, unix_time};
use crate::{
    AdapterError, Attachment, ChannelAdapter, ChannelType, Delivery, Direction, NormalizedMessage, NormalizedUpdate,
    Sender, ThreadRef, UpdateAction,
};

/// The adapter key (second word of the routing key `chat.whatsapp`).
pub const ADAPTER_KEY: &str = "whatsapp";

/// Configuration of the WhatsApp adapter (nothing to configure yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WhatsAppConfig {}

/// The WhatsApp Cloud API adapter.
#[derive(Debug, Clone, Default)]
pub struct WhatsAppAdapter {
    config: WhatsAppConfig,
}

impl WhatsAppAdapter {
    pub fn new(config: WhatsAppConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &WhatsAppConfig {
        &self.config
    }
}

#[async_trait]
impl ChannelAdapter for WhatsAppAdapter {
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
struct Webhook {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    id: Option<String>,
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: Option<String>,
    value: Option<Value>,
}

#[derive(Deserialize)]
struct ChangeValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<WaStatus>,
}

#[derive(Deserialize)]
struct Metadata {
    display_phone_number: Option<String>,
    phone_number_id: Option<String>,
}

#[derive(Deserialize)]
struct Contact {
    profile: Option<Profile>,
    wa_id: Option<String>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    from: String,
    id: String,
    timestamp: Value,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
    image: Option<Media>,
    document: Option<Media>,
    audio: Option<Media>,
    video: Option<Media>,
    sticker: Option<Media>,
    voice: Option<Media>,
    interactive: Option<Interactive>,
    button: Option<Button>,
    location: Option<Location>,
    context: Option<Context>,
    #[serde(default)]
    errors: Vec<WaError>,
}

#[derive(Deserialize)]
struct Text {
    body: Option<String>,
}

#[derive(Deserialize)]
struct Media {
    id: Option<String>,
    mime_type: Option<String>,
    sha256: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct Interactive {
    #[serde(rename = "type")]
    kind: Option<String>,
    button_reply: Option<Reply>,
    list_reply: Option<Reply>,
    nfm_reply: Option<NfmReply>,
}

#[derive(Deserialize)]
struct Reply {
    id: Option<String>,
    title: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct NfmReply {
    body: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Button {
    payload: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct Context {
    id: Option<String>,
    #[serde(default)]
    forwarded: bool,
    #[serde(default)]
    frequently_forwarded: bool,
}

#[derive(Deserialize)]
struct WaStatus {
    id: String,
    status: String,
    timestamp: Value,
    recipient_id: Option<String>,
    #[serde(default)]
    errors: Vec<WaError>,
}

#[derive(Deserialize)]
struct WaError {
    title: Option<String>,
    message: Option<String>,
}

/// Pure decode function, exposed for fuzzing.
pub fn decode(
    body: &[u8],
    _delivery: &Delivery<'_>,
    _config: &WhatsAppConfig,
) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    check_size(body)?;
    let webhook: Webhook = parse_json("WhatsApp", body)?;
    if webhook.object != "whatsapp_business_account" {
        return Err(AdapterError::Unsupported(format!(
            "WhatsApp webhook object `{}` (expected whatsapp_business_account)",
            webhook.object.chars().take(60).collect::<String>()
        )));
    }
    let mut updates = Vec::new();
    for (i, entry) in webhook.entry.into_iter().enumerate() {
        for (j, change) in entry.changes.into_iter().enumerate() {
            if change.field.as_deref() != Some("messages") {
                continue;
            }
            let Some(value) = change.value else { continue };
            let at = format!("entry[{i}].changes[{j}].value");
            let value: ChangeValue =
                serde_json::from_value(value).map_err(|e| AdapterError::Malformed(format!("WhatsApp {at}: {e}")))?;
            decode_value(value, entry.id.as_deref(), &at, &mut updates)?;
        }
    }
    Ok(updates)
}

fn decode_value(
    value: ChangeValue,
    waba_id: Option<&str>,
    at: &str,
    updates: &mut Vec<NormalizedUpdate>,
) -> Result<(), AdapterError> {
    if value.messages.is_empty() && value.statuses.is_empty() {
        return Ok(()); // account-level `errors`, or nothing at all
    }
    let metadata = value.metadata.as_ref();
    let phone_number_id = non_empty(metadata.and_then(|m| m.phone_number_id.as_deref()))
        .ok_or_else(|| AdapterError::Missing(format!("{at}.metadata.phone_number_id")))?;
    let display_number = non_empty(metadata.and_then(|m| m.display_phone_number.as_deref()));

    for (k, message) in value.messages.iter().enumerate() {
        let at = format!("{at}.messages[{k}]");
        if let Some(mut update) = append(message, &value.contacts, &phone_number_id, &at)? {
            if let UpdateAction::Append(m) = &mut update.action {
                if let Some(id) = non_empty(waba_id) {
                    m.metadata.insert("wabaId".into(), Value::String(id));
                }
                if let Some(number) = &display_number {
                    m.metadata.insert("displayPhoneNumber".into(), Value::String(number.clone()));
                }
            }
            updates.push(update);
        }
    }
    for (k, status) in value.statuses.iter().enumerate() {
        let at = format!("{at}.statuses[{k}]");
        let detail = status
            .errors
            .first()
            .and_then(|e| non_empty(e.title.as_deref()).or_else(|| non_empty(e.message.as_deref())));
        let recipient = non_empty(status.recipient_id.as_deref());
        updates.push(NormalizedUpdate {
            external_channel_id: Some(phone_number_id.clone()),
            fallback_channel_ids: vec![],
            thread: ThreadRef { key: recipient, references: vec![], conversation_id_hint: None },
            action: UpdateAction::Status {
                idempotency_key: message_key(&status.id),
                status: status.status.clone(),
                at: timestamp(&status.timestamp, &format!("{at}.timestamp"))?,
                detail,
            },
        });
    }
    Ok(())
}

fn append(
    message: &WaMessage,
    contacts: &[Contact],
    phone_number_id: &str,
    at: &str,
) -> Result<Option<NormalizedUpdate>, AdapterError> {
    let mut meta = Map::new();
    meta.insert("waType".into(), Value::String(message.kind.clone()));
    let mut attachments = Vec::new();

    let body = match message.kind.as_str() {
        "reaction" | "system" => return Ok(None),
        "text" => message.text.as_ref().and_then(|t| t.body.clone()).unwrap_or_default(),
        kind @ ("image" | "document" | "audio" | "video" | "sticker" | "voice") => {
            let media = match kind {
                "image" => &message.image,
                "document" => &message.document,
                "audio" => &message.audio,
                "video" => &message.video,
                "sticker" => &message.sticker,
                _ => &message.voice,
            };
            let media = media.as_ref().ok_or_else(|| AdapterError::Missing(format!("{at}.{kind}")))?;
            attachments.push(Attachment {
                filename: non_empty(media.filename.as_deref()),
                content_type: non_empty(media.mime_type.as_deref()),
                size: None,
                content_id: non_empty(media.id.as_deref()),
                sha256: non_empty(media.sha256.as_deref()),
                url: non_empty(media.url.as_deref()),
                inline: false,
                ..Default::default()
            });
            media.caption.clone().unwrap_or_default()
        }
        "interactive" => {
            let interactive =
                message.interactive.as_ref().ok_or_else(|| AdapterError::Missing(format!("{at}.interactive")))?;
            if let Some(kind) = non_empty(interactive.kind.as_deref()) {
                meta.insert("interactiveType".into(), Value::String(kind));
            }
            match interactive.button_reply.as_ref().or(interactive.list_reply.as_ref()) {
                Some(reply) => {
                    if let Some(id) = non_empty(reply.id.as_deref()) {
                        meta.insert("replyId".into(), Value::String(id));
                    }
                    if let Some(description) = non_empty(reply.description.as_deref()) {
                        meta.insert("replyDescription".into(), Value::String(description));
                    }
                    reply.title.clone().unwrap_or_default()
                }
                None => interactive
                    .nfm_reply
                    .as_ref()
                    .and_then(|n| non_empty(n.body.as_deref()).or_else(|| non_empty(n.name.as_deref())))
                    .unwrap_or_default(),
            }
        }
        "button" => {
            let button = message.button.as_ref().ok_or_else(|| AdapterError::Missing(format!("{at}.button")))?;
            if let Some(payload) = non_empty(button.payload.as_deref()) {
                meta.insert("buttonPayload".into(), Value::String(payload));
            }
            button.text.clone().unwrap_or_default()
        }
        "location" => {
            let location = message.location.as_ref().ok_or_else(|| AdapterError::Missing(format!("{at}.location")))?;
            let place = [location.name.as_deref(), location.address.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.trim().is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            let coordinates = match (location.latitude, location.longitude) {
                (Some(lat), Some(lon)) => format!("({lat}, {lon})"),
                _ => String::new(),
            };
            format!("Location: {place} {coordinates}").trim().to_owned()
        }
        other => {
            let why = message.errors.first().and_then(|e| non_empty(e.title.as_deref()));
            match why {
                Some(why) => format!("[WhatsApp message of type `{other}`: {why}]"),
                None => format!("[WhatsApp message of type `{other}`]"),
            }
        }
    };

    let contact = contacts
        .iter()
        .find(|c| c.wa_id.as_deref() == Some(message.from.as_str()))
        .or(if contacts.len() == 1 { contacts.first() } else { None });
    let wa_id = contact.and_then(|c| non_empty(c.wa_id.as_deref())).unwrap_or_else(|| message.from.clone());
    let references = message
        .context
        .as_ref()
        .and_then(|c| non_empty(c.id.as_deref()))
        .map(|id| vec![message_key(&id)])
        .unwrap_or_default();
    if let Some(context) = &message.context {
        if context.forwarded || context.frequently_forwarded {
            meta.insert("forwarded".into(), Value::Bool(true));
        }
    }

    Ok(Some(NormalizedUpdate {
        external_channel_id: Some(phone_number_id.to_owned()),
        fallback_channel_ids: vec![],
        thread: ThreadRef { key: Some(wa_id), references, conversation_id_hint: None },
        action: UpdateAction::Append(NormalizedMessage {
            idempotency_key: message_key(&message.id),
            direction: Direction::Inbound,
            sender: Sender {
                id: Some(message.from.clone()),
                display_name: contact.and_then(|c| c.profile.as_ref()).and_then(|p| non_empty(p.name.as_deref())),
                primary_email: None,
                profile_image_url: None,
            },
            subject: None,
            body,
            attachments,
            occurred_at: timestamp(&message.timestamp, &format!("{at}.timestamp"))?,
            is_auto_reply: false,
            metadata: meta,
        }),
    }))
}

/// WhatsApp sends unix seconds as a string (`"1739321024"`); accept a number too.
fn timestamp(value: &Value, what: &str) -> Result<DateTime<Utc>, AdapterError> {
    let secs = match value {
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    match secs {
        Some(secs) => unix_time(secs, what),
        None => Err(AdapterError::Malformed(format!("{what} is not a unix time"))),
    }
}

/// The idempotency key of the WhatsApp message `wamid`.
pub fn message_key(wamid: &str) -> String {
    format!("wa:{wamid}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Headers;

    fn run(body: &str) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        let headers = Headers::new();
        let delivery = Delivery {
            body: body.as_bytes(),
            headers: &headers,
            external_channel_id: None,
            received_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        decode(body.as_bytes(), &delivery, &WhatsAppConfig::default())
    }

    fn wrap(value: &str) -> String {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
        )
    }

    #[test]
    fn skips_reactions_and_names_bad_timestamps() {
        let reaction = wrap(
            r#"{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","timestamp":"1","type":"reaction",
                "reaction":{"message_id":"x","emoji":"👍"}}]}"#,
        );
        assert!(run(&reaction).unwrap().is_empty());
        let bad = wrap(
            r#"{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","timestamp":"soon","type":"text"}]}"#,
        );
        let err = run(&bad).unwrap_err();
        assert!(err.to_string().contains("entry[0].changes[0].value.messages[0].timestamp"), "{err}");
    }

    #[test]
    fn requires_phone_number_id_and_known_object() {
        let value = wrap(r#"{"messages":[{"from":"1","id":"w","timestamp":"1","type":"text","text":{"body":"x"}}]}"#);
        assert_eq!(run(&value).unwrap_err().reason_code(), "missing_field");
        let err = run(r#"{"object":"page","entry":[]}"#).unwrap_err();
        assert_eq!(err.reason_code(), "unsupported_event");
        let err = run(r#"{"entry":[]}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `object`"), "{err}");
    }

    #[test]
    fn unknown_types_get_a_placeholder_body() {
        let value = wrap(
            r#"{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","timestamp":1,"type":"unsupported",
                "errors":[{"code":131051,"title":"Message type unknown"}]}]}"#,
        );
        let updates = run(&value).unwrap();
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.body, "[WhatsApp message of type `unsupported`: Message type unknown]");
    }
}
