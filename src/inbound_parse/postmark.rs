//! Postmark inbound: the message as JSON. With "Include raw email content in JSON payload" on,
//! `RawEmail` is the message as received and is published as is; otherwise the message is
//! rebuilt from the JSON fields (see `rebuild`). Postmark does not sign inbound posts: the URL
//! carries basic-auth credentials, checked here. Source: Postmark docs, "Inbound webhook"
//! (example payload) and the `InboundWebhook` type of the official Node.js client.

use serde::Deserialize;

use super::{rebuild, InboundError, InboundMail};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Inbound {
    pub from_full: Option<Address>,
    pub to_full: Vec<Address>,
    pub cc_full: Vec<Address>,
    pub reply_to: String,
    pub original_recipient: String,
    pub subject: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    pub date: String,
    pub text_body: String,
    pub html_body: String,
    pub headers: Vec<Header>,
    pub attachments: Vec<Attachment>,
    pub raw_email: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Address {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Attachment {
    pub name: String,
    /// Base64.
    pub content: String,
    pub content_type: String,
    #[serde(rename = "ContentID")]
    pub content_id: String,
}

pub fn mail(body: &[u8]) -> Result<InboundMail, InboundError> {
    let inbound: Inbound = serde_json::from_slice(body)
        .map_err(|e| InboundError::BadRequest(format!("not Postmark's inbound JSON: {e}")))?;
    let mut recipients: Vec<String> = Vec::new();
    if !inbound.original_recipient.trim().is_empty() {
        recipients.push(inbound.original_recipient.trim().to_owned());
    } else {
        recipients.extend(inbound.to_full.iter().chain(&inbound.cc_full).map(|a| a.email.clone()));
    }
    let raw = match inbound.raw_email.as_deref().filter(|r| !r.trim().is_empty()) {
        Some(raw) => raw.as_bytes().to_vec(),
        None => rebuild::message(&inbound),
    };
    let provider_id = Some(inbound.message_id.clone()).filter(|id| !id.is_empty());
    Ok(InboundMail { recipients, mail_from: inbound.from_full.map(|a| a.email), provider_id, raw })
}
