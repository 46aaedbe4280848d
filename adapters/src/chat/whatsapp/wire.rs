//! The webhook's wire format: what serde reads from Meta's JSON, nothing more.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::chat::{non_empty, unix_time};
use crate::AdapterError;

#[derive(Deserialize)]
pub(super) struct Webhook {
    pub(super) object: String,
    #[serde(default)]
    pub(super) entry: Vec<Entry>,
}

#[derive(Deserialize)]
pub(super) struct Entry {
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) changes: Vec<Change>,
}

#[derive(Deserialize)]
pub(super) struct Change {
    pub(super) field: Option<String>,
    pub(super) value: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct ChangeValue {
    pub(super) metadata: Option<Metadata>,
    #[serde(default)]
    pub(super) contacts: Vec<Contact>,
    #[serde(default)]
    pub(super) messages: Vec<WaMessage>,
    #[serde(default)]
    pub(super) message_echoes: Vec<WaMessage>,
    #[serde(default)]
    pub(super) statuses: Vec<WaStatus>,
    #[serde(default)]
    pub(super) errors: Vec<WaError>,
}

#[derive(Deserialize)]
pub(super) struct Metadata {
    pub(super) display_phone_number: Option<String>,
    pub(super) phone_number_id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Contact {
    pub(super) profile: Option<Profile>,
    pub(super) wa_id: Option<String>,
    /// The business-scoped user id (BSUID, e.g. `US.13491208655302741918`), Meta's id of a user
    /// who may hide their phone number behind a username.
    pub(super) user_id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Profile {
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WaMessage {
    /// The customer's phone number; left out for a user known only by a business-scoped id.
    pub(super) from: Option<String>,
    /// The sender's business-scoped user id, where Meta puts it on the message itself.
    pub(super) from_user_id: Option<String>,
    /// Echoes only: the customer.
    pub(super) to: Option<String>,
    pub(super) id: String,
    pub(super) timestamp: Value,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(flatten)]
    pub(super) content: Content,
    pub(super) context: Option<Context>,
    #[serde(default)]
    pub(super) errors: Vec<WaError>,
    pub(super) edit: Option<EditBody>,
    pub(super) revoke: Option<Revoke>,
}

/// The type-specific objects of a message (also the `message` of an edit).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Content {
    pub(super) text: Option<Text>,
    pub(super) image: Option<Media>,
    pub(super) document: Option<Media>,
    pub(super) audio: Option<Media>,
    pub(super) video: Option<Media>,
    pub(super) sticker: Option<Media>,
    pub(super) voice: Option<Media>,
    pub(super) interactive: Option<Interactive>,
    pub(super) button: Option<Button>,
    pub(super) location: Option<Location>,
    pub(super) contacts: Option<Vec<SharedContact>>,
}

#[derive(Deserialize)]
pub(super) struct EditBody {
    pub(super) original_message_id: Option<String>,
    pub(super) message: Option<EditedMessage>,
}

#[derive(Deserialize)]
pub(super) struct EditedMessage {
    #[serde(flatten)]
    pub(super) content: Content,
}

#[derive(Deserialize)]
pub(super) struct Revoke {
    pub(super) original_message_id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Text {
    pub(super) body: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Media {
    pub(super) id: Option<String>,
    pub(super) mime_type: Option<String>,
    pub(super) sha256: Option<String>,
    pub(super) caption: Option<String>,
    pub(super) filename: Option<String>,
    pub(super) url: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Interactive {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) button_reply: Option<Reply>,
    pub(super) list_reply: Option<Reply>,
    pub(super) nfm_reply: Option<NfmReply>,
}

#[derive(Deserialize)]
pub(super) struct Reply {
    pub(super) id: Option<String>,
    pub(super) title: Option<String>,
    pub(super) description: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct NfmReply {
    pub(super) body: Option<String>,
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Button {
    pub(super) payload: Option<String>,
    pub(super) text: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Location {
    pub(super) latitude: Option<f64>,
    pub(super) longitude: Option<f64>,
    pub(super) name: Option<String>,
    pub(super) address: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct SharedContact {
    pub(super) name: Option<ContactName>,
    #[serde(default)]
    pub(super) phones: Vec<ContactPhone>,
}

#[derive(Deserialize)]
pub(super) struct ContactName {
    pub(super) formatted_name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ContactPhone {
    pub(super) phone: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Context {
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) forwarded: bool,
    #[serde(default)]
    pub(super) frequently_forwarded: bool,
}

#[derive(Deserialize)]
pub(super) struct WaStatus {
    pub(super) id: String,
    pub(super) status: String,
    pub(super) timestamp: Value,
    pub(super) recipient_id: Option<String>,
    /// The recipient's business-scoped user id, for one known without a phone number.
    pub(super) recipient_user_id: Option<String>,
    #[serde(default)]
    pub(super) errors: Vec<WaError>,
}

#[derive(Deserialize)]
pub(super) struct WaError {
    pub(super) code: Option<i64>,
    pub(super) title: Option<String>,
    pub(super) message: Option<String>,
}

impl WaError {
    pub(super) fn title(&self) -> Option<String> {
        non_empty(self.title.as_deref()).or_else(|| non_empty(self.message.as_deref()))
    }

    /// `{code}: {title}`, for delivery-status details.
    pub(super) fn describe(&self) -> Option<String> {
        match (self.code, self.title()) {
            (Some(code), Some(title)) => Some(format!("{code}: {title}")),
            (Some(code), None) => Some(format!("error {code}")),
            (None, title) => title,
        }
    }
}

/// WhatsApp sends unix seconds as a string (`"1739321024"`); accept a number too.
pub(super) fn timestamp(value: &Value, what: &str) -> Result<DateTime<Utc>, AdapterError> {
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
