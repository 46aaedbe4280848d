//! What a message says: its body text and attachments, per message type.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::wire::{Content, WaError, WaMessage};
use crate::chat::{clip, non_empty};
use crate::Attachment;

/// The body and attachments of a message; a placeholder body when the type is unknown or its
/// object is missing (Meta sends e.g. an `interactive` without `interactive` when it cannot
/// render the user's reply, with the reason in `errors`).
pub(super) fn content_of(
    message: &WaMessage,
    value_errors: &[WaError],
    meta: &mut Map<String, Value>,
) -> (String, Vec<Attachment>) {
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
        let why = message.errors.iter().chain(value_errors).find_map(WaError::title);
        match why {
            Some(why) => format!("[WhatsApp message of type `{}`: {why}]", clip(kind, 40)),
            None => format!("[WhatsApp message of type `{}`]", clip(kind, 40)),
        }
    });
    (body, vec![])
}

/// The new text of an edited message: its text body or its media caption.
pub(super) fn edited_text(content: &Content) -> Option<String> {
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
