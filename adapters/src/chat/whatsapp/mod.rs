//! WhatsApp Cloud API adapter (`chat.whatsapp`).
//!
//! Maps Meta's webhook (`object: whatsapp_business_account`, `entry[].changes[].value`). One
//! webhook can carry several entries, changes, messages and statuses; all of them are returned,
//! in payload order.
//!
//! Field `messages`:
//!
//! - `messages[]` → inbound [`UpdateAction::Append`]: text; image/document/audio/video/sticker as
//!   attachment metadata (media id as `content_id`, `mime_type`, `sha256` as lower-case hex —
//!   Meta's documentation shows hex, real webhooks send base64 —, `filename`); the title of an
//!   interactive `button_reply`/`list_reply` or a template quick-reply `button` as the body;
//!   locations and shared contacts as text. Reactions and `system` messages are skipped; other
//!   types (`order`, `unsupported`, an `interactive` whose object Meta could not render, ...) are
//!   appended with a placeholder body naming the type and Meta's error title, so the agent sees
//!   that something came in.
//! - `messages[]` of type `edit` → [`UpdateAction::Edit`] of `edit.original_message_id` (new text
//!   or caption); of type `revoke` → [`UpdateAction::Delete`] of `revoke.original_message_id`.
//! - `statuses[]` (sent/delivered/read/failed) → [`UpdateAction::Status`] on the `wa:{wamid}`
//!   key, with the first error's code and title as detail.
//!
//! Field `smb_message_echoes` (messages a business sent from the WhatsApp Business app on a number
//! shared with the Cloud API): `message_echoes[]` → **outbound** appends, thread key `to`.
//!
//! The thread key is the customer's `wa_id` (one conversation per customer and business number);
//! for a user whom Meta names only by a business-scoped user id (BSUID: a username hides the
//! phone number, so the message has no `from`), that id (`from_user_id` on the message, else
//! `user_id` on the sender's contact) is the sender id and the thread key;
//! the `external_channel_id` is `metadata.phone_number_id`, with the delivery envelope's entry
//! point as fallback; the sender's display name comes from `contacts[].profile.name`. A message
//! whose `from` is the business's own `display_phone_number` is outbound (no entry point setting
//! is needed, so this adapter has no `refine`). Other fields (`account_update`,
//! `message_template_status_update`, `smb_app_state_sync`, ...) and account-level `errors`
//! decode to no updates. A payload whose `object` is not `whatsapp_business_account` is refused
//! as [`AdapterError::Unsupported`].

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_size, clip, non_empty, parse_json, unix_time};
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
    message_echoes: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<WaStatus>,
    #[serde(default)]
    errors: Vec<WaError>,
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
    /// The business-scoped user id (BSUID, e.g. `US.13491208655302741918`), Meta's id of a user
    /// who may hide their phone number behind a username.
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    /// The customer's phone number; left out for a user known only by a business-scoped id.
    from: Option<String>,
    /// The sender's business-scoped user id, where Meta puts it on the message itself.
    from_user_id: Option<String>,
    /// Echoes only: the customer.
    to: Option<String>,
    id: String,
    timestamp: Value,
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    content: Content,
    context: Option<Context>,
    #[serde(default)]
    errors: Vec<WaError>,
    edit: Option<EditBody>,
    revoke: Option<Revoke>,
}

/// The type-specific objects of a message (also the `message` of an edit).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Content {
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
    contacts: Option<Vec<SharedContact>>,
}

#[derive(Deserialize)]
struct EditBody {
    original_message_id: Option<String>,
    message: Option<EditedMessage>,
}

#[derive(Deserialize)]
struct EditedMessage {
    #[serde(flatten)]
    content: Content,
}

#[derive(Deserialize)]
struct Revoke {
    original_message_id: Option<String>,
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
struct SharedContact {
    name: Option<ContactName>,
    #[serde(default)]
    phones: Vec<ContactPhone>,
}

#[derive(Deserialize)]
struct ContactName {
    formatted_name: Option<String>,
}

#[derive(Deserialize)]
struct ContactPhone {
    phone: Option<String>,
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
    /// The recipient's business-scoped user id, for one known without a phone number.
    recipient_user_id: Option<String>,
    #[serde(default)]
    errors: Vec<WaError>,
}

#[derive(Deserialize)]
struct WaError {
    code: Option<i64>,
    title: Option<String>,
    message: Option<String>,
}

impl WaError {
    fn title(&self) -> Option<String> {
        non_empty(self.title.as_deref()).or_else(|| non_empty(self.message.as_deref()))
    }

    /// `{code}: {title}`, for delivery-status details.
    fn describe(&self) -> Option<String> {
        match (self.code, self.title()) {
            (Some(code), Some(title)) => Some(format!("{code}: {title}")),
            (Some(code), None) => Some(format!("error {code}")),
            (None, title) => title,
        }
    }
}

/// Pure decode function, exposed for fuzzing. Every chat adapter's `decode` has this shape; this
/// one needs nothing from the delivery besides the body.
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
            clip(&webhook.object, 60)
        )));
    }
    let mut updates = Vec::new();
    for (i, entry) in webhook.entry.into_iter().enumerate() {
        for (j, change) in entry.changes.into_iter().enumerate() {
            let echoes = match change.field.as_deref() {
                Some("messages") => false,
                Some("smb_message_echoes") => true,
                _ => continue,
            };
            let Some(value) = change.value else { continue };
            let at = format!("entry[{i}].changes[{j}].value");
            let value: ChangeValue =
                serde_json::from_value(value).map_err(|e| AdapterError::Malformed(format!("WhatsApp {at}: {e}")))?;
            decode_value(value, entry.id.as_deref(), echoes, &at, &mut updates)?;
        }
    }
    Ok(updates)
}

/// What every update of one `value` shares.
struct ValueCtx<'a> {
    phone_number_id: String,
    display_number: Option<String>,
    waba_id: Option<String>,
    contacts: &'a [Contact],
    value_errors: &'a [WaError],
}

fn decode_value(
    value: ChangeValue,
    waba_id: Option<&str>,
    echoes: bool,
    at: &str,
    updates: &mut Vec<NormalizedUpdate>,
) -> Result<(), AdapterError> {
    if value.messages.is_empty() && value.statuses.is_empty() && value.message_echoes.is_empty() {
        return Ok(()); // account-level `errors`, or nothing at all
    }
    let metadata = value.metadata.as_ref();
    let phone_number_id = non_empty(metadata.and_then(|m| m.phone_number_id.as_deref()))
        .ok_or_else(|| AdapterError::Missing(format!("{at}.metadata.phone_number_id")))?;
    let ctx = ValueCtx {
        phone_number_id,
        display_number: non_empty(metadata.and_then(|m| m.display_phone_number.as_deref())),
        waba_id: non_empty(waba_id),
        contacts: &value.contacts,
        value_errors: &value.errors,
    };

    let (list, name) = if echoes { (&value.message_echoes, "message_echoes") } else { (&value.messages, "messages") };
    for (k, message) in list.iter().enumerate() {
        let at = format!("{at}.{name}[{k}]");
        if let Some(update) = message_update(message, &ctx, echoes, &at)? {
            updates.push(update);
        }
    }
    for (k, status) in value.statuses.iter().enumerate() {
        let at = format!("{at}.statuses[{k}]");
        let recipient =
            non_empty(status.recipient_id.as_deref()).or_else(|| non_empty(status.recipient_user_id.as_deref()));
        updates.push(NormalizedUpdate {
            external_channel_id: Some(ctx.phone_number_id.clone()),
            fallback_channel_ids: vec![],
            thread: ThreadRef { key: recipient, references: vec![], conversation_id_hint: None },
            action: UpdateAction::Status {
                idempotency_key: message_key(&status.id),
                status: status.status.clone(),
                at: timestamp(&status.timestamp, &format!("{at}.timestamp"))?,
                detail: status.errors.first().and_then(WaError::describe),
            },
        });
    }
    Ok(())
}

/// Digits only, for comparing phone numbers written with or without `+`, spaces or dashes.
fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Whether two phone numbers are the same; values without digits (placeholders, ids) never
/// are, or every two of them would match.
fn same_number(a: &str, b: &str) -> bool {
    let a = digits(a);
    !a.is_empty() && a == digits(b)
}

fn message_update(
    message: &WaMessage,
    ctx: &ValueCtx<'_>,
    echo: bool,
    at: &str,
) -> Result<Option<NormalizedUpdate>, AdapterError> {
    let occurred_at = timestamp(&message.timestamp, &format!("{at}.timestamp"))?;
    let phone = non_empty(message.from.as_deref());
    let contact = sender_contact(message, phone.as_deref(), ctx.contacts);
    // A user who hides their number behind a username comes with a business-scoped user id
    // only: on the message, or on its contact.
    let sender_id = phone
        .clone()
        .or_else(|| non_empty(message.from_user_id.as_deref()))
        .or_else(|| contact.and_then(|c| non_empty(c.user_id.as_deref())))
        .ok_or_else(|| AdapterError::Missing(format!("{at}.from")))?;
    let from_us =
        echo || ctx.display_number.as_deref().zip(phone.as_deref()).is_some_and(|(own, from)| same_number(own, from));
    let customer = match (from_us, non_empty(message.to.as_deref())) {
        (true, Some(to)) => to,
        _ => sender_id.clone(),
    };
    let thread =
        |references: Vec<String>| ThreadRef { key: Some(customer.clone()), references, conversation_id_hint: None };

    match message.kind.as_str() {
        "reaction" | "system" => return Ok(None),
        "edit" => {
            let edit = message.edit.as_ref().ok_or_else(|| AdapterError::Missing(format!("{at}.edit")))?;
            let original = non_empty(edit.original_message_id.as_deref())
                .ok_or_else(|| AdapterError::Missing(format!("{at}.edit.original_message_id")))?;
            let body = edit.message.as_ref().and_then(|m| edited_text(&m.content)).unwrap_or_default();
            return Ok(Some(NormalizedUpdate {
                external_channel_id: Some(ctx.phone_number_id.clone()),
                fallback_channel_ids: vec![],
                thread: thread(vec![]),
                action: UpdateAction::Edit { idempotency_key: message_key(&original), body, edited_at: occurred_at },
            }));
        }
        "revoke" => {
            let original = message
                .revoke
                .as_ref()
                .and_then(|r| non_empty(r.original_message_id.as_deref()))
                .ok_or_else(|| AdapterError::Missing(format!("{at}.revoke.original_message_id")))?;
            return Ok(Some(NormalizedUpdate {
                external_channel_id: Some(ctx.phone_number_id.clone()),
                fallback_channel_ids: vec![],
                thread: thread(vec![]),
                action: UpdateAction::Delete { idempotency_key: message_key(&original), deleted_at: occurred_at },
            }));
        }
        _ => {}
    }

    let mut meta = Map::new();
    meta.insert("waType".into(), Value::String(message.kind.clone()));
    let (body, attachments) = content_of(message, ctx, &mut meta);

    let contact = if from_us { None } else { contact };
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
    if let Some(id) = &ctx.waba_id {
        meta.insert("wabaId".into(), Value::String(id.clone()));
    }
    if let Some(number) = &ctx.display_number {
        meta.insert("displayPhoneNumber".into(), Value::String(number.clone()));
    }
    if echo {
        meta.insert("echo".into(), Value::Bool(true));
    }

    Ok(Some(NormalizedUpdate {
        external_channel_id: Some(ctx.phone_number_id.clone()),
        fallback_channel_ids: vec![],
        thread: ThreadRef {
            key: Some(contact.and_then(|c| non_empty(c.wa_id.as_deref())).unwrap_or_else(|| customer.clone())),
            references,
            conversation_id_hint: None,
        },
        action: UpdateAction::Append(NormalizedMessage {
            idempotency_key: message_key(&message.id),
            direction: if from_us { Direction::Outbound } else { Direction::Inbound },
            sender: Sender {
                id: Some(sender_id),
                display_name: contact.and_then(|c| c.profile.as_ref()).and_then(|p| non_empty(p.name.as_deref())),
                primary_email: None,
                profile_image_url: None,
            },
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

/// The `contacts[]` entry of a message's sender: the one with its phone number (`wa_id`) or its
/// business-scoped id (`user_id`), else the only one.
fn sender_contact<'c>(message: &WaMessage, phone: Option<&str>, contacts: &'c [Contact]) -> Option<&'c Contact> {
    let user_id = non_empty(message.from_user_id.as_deref());
    contacts
        .iter()
        .find(|c| {
            (phone.is_some() && c.wa_id.as_deref() == phone)
                || (user_id.is_some() && c.user_id.as_deref() == user_id.as_deref())
        })
        .or(if contacts.len() == 1 { contacts.first() } else { None })
}

/// The body and attachments of a message; a placeholder body when the type is unknown or its
/// object is missing (Meta sends e.g. an `interactive` without `interactive` when it cannot
/// render the user's reply, with the reason in `errors`).
fn content_of(message: &WaMessage, ctx: &ValueCtx<'_>, meta: &mut Map<String, Value>) -> (String, Vec<Attachment>) {
    let c = &message.content;
    let kind = message.kind.as_str();
    let media = match kind {
        "image" => c.image.as_ref(),
        "document" => c.document.as_ref(),
        "audio" => c.audio.as_ref(),
        "video" => c.video.as_ref(),
        "sticker" => c.sticker.as_ref(),
        "voice" => c.voice.as_ref(),
        _ => None,
    };
    if let Some(media) = media {
        let attachment = Attachment {
            filename: non_empty(media.filename.as_deref()),
            content_type: non_empty(media.mime_type.as_deref()),
            content_id: non_empty(media.id.as_deref()),
            sha256: media.sha256.as_deref().and_then(normalize_sha256),
            url: non_empty(media.url.as_deref()),
            inline: kind == "sticker",
            ..Default::default()
        };
        return (media.caption.clone().unwrap_or_default(), vec![attachment]);
    }
    let body = match kind {
        "text" => c.text.as_ref().map(|t| t.body.clone().unwrap_or_default()),
        "interactive" => c.interactive.as_ref().map(|interactive| {
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
        }),
        "button" => c.button.as_ref().map(|button| {
            if let Some(payload) = non_empty(button.payload.as_deref()) {
                meta.insert("buttonPayload".into(), Value::String(payload));
            }
            button.text.clone().unwrap_or_default()
        }),
        "location" => c.location.as_ref().map(|location| {
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
            format!("Location: {place} {coordinates}").split_whitespace().collect::<Vec<_>>().join(" ")
        }),
        "contacts" => c.contacts.as_ref().map(|contacts| {
            let people = contacts
                .iter()
                .map(|contact| {
                    let name = contact.name.as_ref().and_then(|n| non_empty(n.formatted_name.as_deref()));
                    let phones =
                        contact.phones.iter().filter_map(|p| non_empty(p.phone.as_deref())).collect::<Vec<_>>();
                    match (name, phones.is_empty()) {
                        (Some(name), false) => format!("{name} ({})", phones.join(", ")),
                        (Some(name), true) => name,
                        (None, _) => phones.join(", "),
                    }
                })
                .collect::<Vec<_>>();
            format!("Contacts: {}", people.join("; "))
        }),
        _ => None,
    };
    let body = body.unwrap_or_else(|| {
        let why = message.errors.iter().chain(ctx.value_errors).find_map(WaError::title);
        match why {
            Some(why) => format!("[WhatsApp message of type `{}`: {why}]", clip(kind, 40)),
            None => format!("[WhatsApp message of type `{}`]", clip(kind, 40)),
        }
    });
    (body, vec![])
}

/// The new text of an edited message: its text body or its media caption.
fn edited_text(content: &Content) -> Option<String> {
    content.text.as_ref().and_then(|t| t.body.clone()).or_else(|| {
        [&content.image, &content.video, &content.document, &content.audio, &content.sticker, &content.voice]
            .into_iter()
            .flatten()
            .find_map(|m| m.caption.clone())
    })
}

/// Lower-case hex of a SHA-256 that Meta sends as hex (documentation) or base64 (real payloads);
/// `None` when it is neither.
pub fn normalize_sha256(value: &str) -> Option<String> {
    let value = value.trim();
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(value.to_ascii_lowercase());
    }
    BASE64.decode(value).ok().filter(|bytes| bytes.len() == 32).map(hex::encode)
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

    fn run(body: &str) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        crate::chat::decode_bare(body, &WhatsAppConfig::default(), decode)
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

    fn single_append(body: &str) -> (NormalizedUpdate, NormalizedMessage) {
        let mut updates = run(body).unwrap();
        assert_eq!(updates.len(), 1);
        let update = updates.remove(0);
        let UpdateAction::Append(m) = update.action.clone() else { panic!("{update:?}") };
        (update, m)
    }

    #[test]
    fn a_sender_known_only_by_a_business_scoped_id() {
        // The id on the contact (as in netflie's test payload) or on the message itself.
        let on_contact = wrap(
            r#"{"metadata":{"phone_number_id":"P","display_phone_number":"15550001111"},
                "contacts":[{"profile":{"name":"Ann"},"user_id":"US.1349"}],
                "messages":[{"id":"w1","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
        );
        let (update, m) = single_append(&on_contact);
        assert_eq!(m.sender.id.as_deref(), Some("US.1349"));
        assert_eq!(m.sender.display_name.as_deref(), Some("Ann"));
        assert_eq!(m.direction, Direction::Inbound);
        assert_eq!(update.thread.key.as_deref(), Some("US.1349"));
        let on_message = wrap(
            r#"{"metadata":{"phone_number_id":"P"},
                "contacts":[{"profile":{"name":"Bo"},"user_id":"US.2"},{"profile":{"name":"Ann"},"user_id":"US.1"}],
                "messages":[{"from_user_id":"US.1","id":"w2","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
        );
        let (update, m) = single_append(&on_message);
        assert_eq!((m.sender.id.as_deref(), m.sender.display_name.as_deref()), (Some("US.1"), Some("Ann")));
        assert_eq!(update.thread.key.as_deref(), Some("US.1"));
        // A phone number, when there is one, stays the sender and the thread.
        let both = wrap(
            r#"{"metadata":{"phone_number_id":"P"},"contacts":[{"wa_id":"4917","user_id":"DE.9"}],
                "messages":[{"from":"4917","from_user_id":"DE.9","id":"w3","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
        );
        let (update, m) = single_append(&both);
        assert_eq!((m.sender.id.as_deref(), update.thread.key.as_deref()), (Some("4917"), Some("4917")));
        // No id at all: the message cannot be attributed.
        let none = wrap(
            r#"{"metadata":{"phone_number_id":"P"},"messages":[{"id":"w4","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
        );
        assert_eq!(run(&none).unwrap_err().reason_code(), "missing_field");
        // Statuses for such a user name its thread by that id.
        let status = wrap(
            r#"{"metadata":{"phone_number_id":"P"},"statuses":[{"id":"w5","status":"read","timestamp":"1","recipient_user_id":"US.1"}]}"#,
        );
        assert_eq!(run(&status).unwrap()[0].thread.key.as_deref(), Some("US.1"));
    }

    #[test]
    fn numbers_without_digits_are_never_our_own() {
        assert!(same_number("+1 555-000 1111", "15550001111"));
        assert!(!same_number("PHONE_NUMBER", "PHONE_NUMBER"), "placeholders would all match");
        let placeholders = wrap(
            r#"{"metadata":{"phone_number_id":"P","display_phone_number":"PHONE_NUMBER"},
                "messages":[{"from":"PHONE_NUMBER","id":"w","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
        );
        assert_eq!(single_append(&placeholders).1.direction, Direction::Inbound);
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
