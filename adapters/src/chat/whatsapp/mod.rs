//! WhatsApp Cloud API adapter (`chat.whatsapp`).
//!
//! Maps Meta's webhook (`object: whatsapp_business_account`, `entry[].changes[].value`). One
//! webhook can carry several entries, changes, messages and statuses; all of them are returned,
//! in payload order, and one that cannot be used fails alone ([`decode_items`]).
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

mod content;
mod message;
#[cfg(test)]
mod tests;
mod wire;

use super::{check_size, clip, non_empty, parse_json};
use crate::{AdapterError, DecodedItem, Delivery, NormalizedUpdate, ThreadRef, UpdateAction};
pub use content::normalize_sha256;
pub use message::message_key;
use message::{message_update, ValueCtx};
use wire::{timestamp, ChangeValue, WaError, Webhook};

/// The adapter key (second word of the routing key `chat.whatsapp`).
pub const ADAPTER_KEY: &str = "whatsapp";

/// Configuration of the WhatsApp adapter (nothing to configure yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WhatsAppConfig {}

chat_adapter!(
    /// The WhatsApp Cloud API adapter.
    WhatsAppAdapter(WhatsAppConfig); items = decode_items
);

/// Pure decode function, exposed for fuzzing: all or nothing. Every chat adapter's `decode` has
/// this shape; this one needs nothing from the delivery besides the body.
pub fn decode(
    body: &[u8],
    delivery: &Delivery<'_>,
    config: &WhatsAppConfig,
) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    decode_items(body, delivery, config)?.into_iter().collect()
}

/// [`decode`] item by item: a message, status or change that cannot be used fails alone, and
/// the webhook's other items still apply.
pub fn decode_items(
    body: &[u8],
    _delivery: &Delivery<'_>,
    _config: &WhatsAppConfig,
) -> Result<Vec<DecodedItem>, AdapterError> {
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
            match serde_json::from_value::<ChangeValue>(value) {
                Ok(value) => decode_value(value, entry.id.as_deref(), echoes, &at, &mut updates),
                Err(e) => updates.push(Err(AdapterError::Malformed(format!("WhatsApp {at}: {e}")))),
            }
        }
    }
    Ok(updates)
}

fn decode_value(value: ChangeValue, waba_id: Option<&str>, echoes: bool, at: &str, updates: &mut Vec<DecodedItem>) {
    if value.messages.is_empty() && value.statuses.is_empty() && value.message_echoes.is_empty() {
        return; // account-level `errors`, or nothing at all
    }
    let metadata = value.metadata.as_ref();
    let Some(phone_number_id) = non_empty(metadata.and_then(|m| m.phone_number_id.as_deref())) else {
        updates.push(Err(AdapterError::Missing(format!("{at}.metadata.phone_number_id"))));
        return;
    };
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
        if let Some(update) = message_update(message, &ctx, echoes, &at).transpose() {
            updates.push(update);
        }
    }
    for (k, status) in value.statuses.iter().enumerate() {
        let at = format!("{at}.statuses[{k}]");
        let recipient =
            non_empty(status.recipient_id.as_deref()).or_else(|| non_empty(status.recipient_user_id.as_deref()));
        let time = match timestamp(&status.timestamp, &format!("{at}.timestamp")) {
            Ok(time) => time,
            Err(e) => {
                updates.push(Err(e));
                continue;
            }
        };
        updates.push(Ok(NormalizedUpdate {
            external_channel_id: Some(ctx.phone_number_id.clone()),
            fallback_channel_ids: vec![],
            thread: ThreadRef { key: recipient, references: vec![], conversation_id_hint: None },
            action: UpdateAction::Status {
                idempotency_key: message_key(&status.id),
                status: status.status.clone(),
                at: time,
                detail: status.errors.first().and_then(WaError::describe),
            },
        }));
    }
}
