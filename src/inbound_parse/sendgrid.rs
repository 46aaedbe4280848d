//! SendGrid Inbound Parse with "POST the raw, full MIME message" on: a multipart form whose
//! `email` field is the message and `envelope` the SMTP envelope (`{"to":[…],"from":"…"}`).
//! SendGrid does not sign these posts: the URL carries basic-auth credentials
//! (`https://user:password@hooks.example.com/…`), checked here. Source: SendGrid docs, "Inbound
//! Parse Webhook" (default and raw parameters).

use super::form::Form;
use super::{InboundError, InboundMail};

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    to: Vec<String>,
    from: Option<String>,
}

pub fn mail(form: &Form) -> Result<InboundMail, InboundError> {
    let raw = form.bytes("email").ok_or_else(|| {
        InboundError::BadRequest("no `email` field: turn on \"POST the raw, full MIME message\"".into())
    })?;
    let envelope: Envelope = form
        .text("envelope")
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| InboundError::BadRequest(format!("`envelope` is not the expected JSON: {e}")))?
        .ok_or_else(|| InboundError::BadRequest("no `envelope` field".into()))?;
    Ok(InboundMail { recipients: envelope.to, mail_from: envelope.from, provider_id: None, raw: raw.to_vec() })
}
