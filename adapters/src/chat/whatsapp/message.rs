//! One entry of `messages[]` or `message_echoes[]` → an append, an edit or a delete.

use serde_json::{Map, Value};

use super::content::{content_of, edited_text};
use super::wire::{timestamp, Contact, WaError, WaMessage};
use crate::chat::non_empty;
use crate::{AdapterError, Direction, NormalizedMessage, NormalizedUpdate, Sender, ThreadRef, UpdateAction};

/// What every update of one `value` shares.
pub(super) struct ValueCtx<'a> {
    pub(super) phone_number_id: String,
    pub(super) display_number: Option<String>,
    pub(super) waba_id: Option<String>,
    pub(super) contacts: &'a [Contact],
    pub(super) value_errors: &'a [WaError],
}

/// Digits only, for comparing phone numbers written with or without `+`, spaces or dashes.
fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Whether two phone numbers are the same; values without digits (placeholders, ids) never
/// are, or every two of them would match.
pub(super) fn same_number(a: &str, b: &str) -> bool {
    let a = digits(a);
    !a.is_empty() && a == digits(b)
}

pub(super) fn message_update(
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
    let (body, attachments) = content_of(message, ctx.value_errors, &mut meta);

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

/// The idempotency key of the WhatsApp message `wamid`.
pub fn message_key(wamid: &str) -> String {
    format!("wa:{wamid}")
}
