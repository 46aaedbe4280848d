//! Mandrill (Mailchimp Transactional) inbound routes: a form post whose `mandrill_events` is a
//! JSON array of `inbound` events, each with `msg.raw_msg` (the message) and `msg.email` (the
//! recipient that matched the route). Signed: `X-Mandrill-Signature` = base64 HMAC-SHA1, with
//! the webhook's key, of the webhook URL exactly as configured followed by every POST field's
//! key and value, sorted by key. Source: Mandrill docs, "Inbound Webhook Format" and "How to
//! Authenticate Webhook Requests".

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::form::Form;
use super::{InboundError, InboundMail};

pub const SIGNATURE_HEADER: &str = "x-mandrill-signature";

pub fn sign(key: &str, url: &str, form: &Form) -> String {
    let mut fields: Vec<&(String, Vec<u8>)> = form.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (name, value) in fields {
        mac.update(name.as_bytes());
        mac.update(value);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Any of the configured webhook keys (one per Mandrill webhook, and during a key rotation).
pub fn verify(form: &Form, keys: &[String], url: &str, signature: &str) -> Result<(), InboundError> {
    if signature.is_empty() {
        return Err(InboundError::Unauthorized(format!("no {SIGNATURE_HEADER} header")));
    }
    let matched = keys.iter().fold(subtle::Choice::from(0), |acc, key| {
        acc | sign(key, url, form).as_bytes().ct_eq(signature.trim().as_bytes())
    });
    if bool::from(matched) {
        Ok(())
    } else {
        Err(InboundError::Unauthorized(format!("signature does not match (signed URL: {url})")))
    }
}

#[derive(serde::Deserialize)]
struct Event {
    event: String,
    #[serde(rename = "_id")]
    id: Option<String>,
    msg: Option<Msg>,
}

#[derive(serde::Deserialize)]
struct Msg {
    raw_msg: Option<String>,
    email: Option<String>,
    from_email: Option<String>,
}

/// The inbound events' messages; other events (Mandrill's test `ping` is not inbound) are
/// skipped.
pub fn mails(form: &Form) -> Result<Vec<InboundMail>, InboundError> {
    let events = form.text("mandrill_events").ok_or_else(|| InboundError::BadRequest("no `mandrill_events`".into()))?;
    let events: Vec<Event> = serde_json::from_str(events)
        .map_err(|e| InboundError::BadRequest(format!("`mandrill_events` is not the expected JSON: {e}")))?;
    let mut mails = Vec::new();
    for event in events.into_iter().filter(|e| e.event == "inbound") {
        let Some(msg) = event.msg else { continue };
        let raw =
            msg.raw_msg.ok_or_else(|| InboundError::BadRequest("an inbound event without `msg.raw_msg`".into()))?;
        mails.push(InboundMail {
            recipients: msg.email.into_iter().collect(),
            mail_from: msg.from_email,
            provider_id: event.id,
            raw: raw.into_bytes(),
        });
    }
    Ok(mails)
}
