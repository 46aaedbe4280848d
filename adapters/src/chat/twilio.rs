//! Twilio Programmable Messaging adapter (`chat.twilio-sms`).
//!
//! Decodes Twilio's `application/x-www-form-urlencoded` incoming-message webhook (SMS, MMS, and
//! WhatsApp-through-Twilio): `MessageSid` (or the legacy `SmsMessageSid`/`SmsSid`), `From`, `To`,
//! `Body`, `NumMedia` with `MediaUrl{N}`/`MediaContentType{N}`, and for WhatsApp locations
//! `Latitude`/`Longitude`/`Address`/`Label` (rendered as the body). The idempotency key is
//! `twilio:{MessageSid}`, the `external_channel_id` is `To` (our number), the thread key and
//! sender id are `From` (one conversation per customer number). Without `To` the delivery
//! envelope's entry point is our number, and without either the message is refused. The payload
//! carries no time, so `occurred_at` is the delivery's `received_at`. Invalid UTF-8 in the form
//! decodes lossily.
//!
//! The same endpoint often also receives status callbacks for messages we sent (`MessageStatus`
//! of `sent`, `delivered`, `undelivered`, `failed`, `read`, ...). Those become
//! [`UpdateAction::Status`] on the same key, with `ErrorCode`/`ErrorMessage` as detail; there
//! `From` is our number (the `external_channel_id`) and `To` the customer (the thread key).
//!
//! Candidates after the payload's own number: the delivery envelope's entry point, then `From`.
//! That last one lets [`refine`] recognise a message sent *from* one of our numbers (a publisher
//! mirroring what an agent sent): when the resolved entry point's own number is the sender, or
//! the sender is one of the entry point's `metadata["ownNumbers"]` (a string or an array), the
//! message is outbound and its thread key becomes the customer's number (`To`).

use serde_json::{Map, Value};

use super::{check_size, clip, metadata_strings, non_empty};
use crate::{
    AdapterError, Attachment, Delivery, Direction, EntryPointInfo, NormalizedMessage, NormalizedUpdate, Sender,
    ThreadRef, UpdateAction,
};

/// The adapter key (second word of the routing key `chat.twilio-sms`).
pub const ADAPTER_KEY: &str = "twilio-sms";

/// The entry point metadata key listing further numbers of ours; see [`refine`].
pub const OWN_NUMBERS_KEY: &str = "ownNumbers";

/// Twilio attaches at most 10 media to a message; more indices than this are never read.
pub const MAX_MEDIA: usize = 20;

/// Configuration of the Twilio adapter (nothing to configure yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwilioSmsConfig {}

chat_adapter!(
    /// The Twilio SMS/MMS adapter.
    TwilioSmsAdapter(TwilioSmsConfig), refine
);

/// Whether two numbers are the same: case-insensitive, ignoring surrounding space, so that
/// `whatsapp:+1415...` matches `WhatsApp:+1415...`.
fn same_number(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Mark a message sent from our own number as outbound (see the module docs) and move it to the
/// customer's thread.
pub fn refine(update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
    let UpdateAction::Append(message) = &mut update.action else { return };
    let Some(from) = message.sender.id.as_deref() else { return };
    let own = same_number(from, entry_point.external_channel_id)
        || metadata_strings(entry_point.metadata, OWN_NUMBERS_KEY).iter().any(|n| same_number(n, from));
    if !own {
        return;
    }
    message.direction = Direction::Outbound;
    if let Some(to) = message.metadata.get("to").and_then(Value::as_str) {
        update.thread.key = Some(to.to_owned());
    }
}

/// Parse a form-encoded body into its `(name, value)` pairs, in order. Also what
/// [`crate::signature::verify_twilio`] needs as `form_params`.
pub fn form_params(body: &[u8]) -> Result<Vec<(String, String)>, AdapterError> {
    check_size(body)?;
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
        return Err(AdapterError::Malformed(
            "Twilio webhook bodies are application/x-www-form-urlencoded, this looks like JSON".into(),
        ));
    }
    serde_urlencoded::from_bytes(body).map_err(|e| AdapterError::Malformed(format!("Twilio form body: {e}")))
}

/// Pure decode function, exposed for fuzzing.
pub fn decode(
    body: &[u8],
    delivery: &Delivery<'_>,
    _config: &TwilioSmsConfig,
) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    let params = form_params(body)?;
    let get = |name: &str| non_empty(params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()));

    let sid = get("MessageSid")
        .or_else(|| get("SmsMessageSid"))
        .or_else(|| get("SmsSid"))
        .ok_or_else(|| AdapterError::Missing("MessageSid".into()))?;
    let from = get("From").ok_or_else(|| AdapterError::Missing("From".into()))?;
    // Twilio always sends `To`; minimal posts (relays, test tools) may leave it out when the
    // endpoint itself names the number, and then the envelope's entry point stands in.
    let to = get("To");

    let status = get("MessageStatus").or_else(|| get("SmsStatus"));
    if let Some(status) = status.filter(|s| s != "received" && s != "receiving") {
        // A status callback for a message we sent: From is our number, To the customer.
        let detail = match (get("ErrorCode"), get("ErrorMessage")) {
            (Some(code), Some(message)) => Some(format!("{code}: {message}")),
            (Some(code), None) => Some(format!("error {code}")),
            (None, message) => message,
        };
        return Ok(vec![NormalizedUpdate {
            fallback_channel_ids: Vec::new(),
            external_channel_id: Some(from),
            thread: ThreadRef { key: to, references: vec![], conversation_id_hint: None },
            action: UpdateAction::Status {
                idempotency_key: message_key(&sid),
                status,
                at: delivery.received_at,
                detail,
            },
        }]);
    }

    let to =
        to.or_else(|| non_empty(delivery.external_channel_id)).ok_or_else(|| AdapterError::Missing("To".into()))?;
    let num_media = match get("NumMedia") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| AdapterError::Malformed(format!("NumMedia `{}` is not a number", clip(&n, 20))))?,
        None => 0,
    };
    let attachments = (0..num_media.min(MAX_MEDIA))
        .filter_map(|i| {
            let url = get(&format!("MediaUrl{i}"))?;
            Some(Attachment {
                url: Some(url),
                content_type: get(&format!("MediaContentType{i}")),
                ..Attachment::default()
            })
        })
        .collect();

    let mut meta = Map::new();
    for (param, key) in [
        ("AccountSid", "accountSid"),
        ("MessagingServiceSid", "messagingServiceSid"),
        ("NumSegments", "numSegments"),
        ("FromCity", "fromCity"),
        ("FromState", "fromState"),
        ("FromZip", "fromZip"),
        ("FromCountry", "fromCountry"),
        ("WaId", "waId"),
        ("To", "to"),
    ] {
        if let Some(value) = get(param) {
            meta.insert(key.into(), Value::String(value));
        }
    }
    let references = get("OriginalRepliedMessageSid").map(|s| vec![message_key(&s)]).unwrap_or_default();

    let mut body = params.iter().find(|(k, _)| k == "Body").map(|(_, v)| v.clone()).unwrap_or_default();
    if body.trim().is_empty() {
        if let (Some(lat), Some(lon)) = (get("Latitude"), get("Longitude")) {
            let place = [get("Label"), get("Address")].into_iter().flatten().collect::<Vec<_>>().join(", ");
            body = format!("Location: {place} ({lat}, {lon})").split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }

    // Our own number may be the sender (an outbound copy): then `From` names the entry point.
    let fallback_channel_ids = if same_number(&from, &to) { vec![] } else { vec![from.clone()] };
    Ok(vec![NormalizedUpdate {
        external_channel_id: Some(to),
        fallback_channel_ids,
        thread: ThreadRef { key: Some(from.clone()), references, conversation_id_hint: None },
        action: UpdateAction::Append(NormalizedMessage {
            idempotency_key: message_key(&sid),
            direction: Direction::Inbound,
            sender: Sender { id: Some(from), display_name: get("ProfileName"), ..Sender::default() },
            subject: None,
            body,
            attachments,
            occurred_at: delivery.received_at,
            is_auto_reply: false,
            metadata: meta,
            fingerprint: None,
        }),
    }])
}

/// The idempotency key of the Twilio message `sid`.
pub fn message_key(sid: &str) -> String {
    format!("twilio:{sid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        crate::chat::decode_bare(body, &TwilioSmsConfig::default(), decode)
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(run("From=%2B1&To=%2B2").unwrap_err(), AdapterError::Missing("MessageSid".into()));
        assert_eq!(run("MessageSid=SM1&To=%2B2").unwrap_err(), AdapterError::Missing("From".into()));
        assert_eq!(run("MessageSid=SM1&From=%2B1").unwrap_err(), AdapterError::Missing("To".into()));
        let err = run("MessageSid=SM1&From=%2B1&To=%2B2&NumMedia=lots").unwrap_err();
        assert!(err.to_string().contains("NumMedia `lots`"), "{err}");
        let err = run(r#"{"MessageSid":"SM1"}"#).unwrap_err();
        assert!(err.to_string().contains("JSON"), "{err}");
    }

    #[test]
    fn without_to_the_envelope_names_our_number() {
        let body = "SmsSid=SMxx&From=%2B12345&Body=hi";
        let headers = crate::Headers::new();
        let delivery = Delivery {
            body: body.as_bytes(),
            headers: &headers,
            external_channel_id: Some("+15550001111"),
            received_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        let updates = decode(body.as_bytes(), &delivery, &TwilioSmsConfig::default()).unwrap();
        assert_eq!(updates[0].external_channel_id.as_deref(), Some("+15550001111"));
        assert_eq!(updates[0].thread.key.as_deref(), Some("+12345"));
        // A status callback needs no `To`: the message key names what it is about.
        let status = run("MessageSid=SM1&From=%2B1&MessageStatus=delivered").unwrap();
        assert_eq!(status[0].thread.key, None);
        assert_eq!(status[0].idempotency_key(), "twilio:SM1");
    }

    #[test]
    fn huge_num_media_reads_only_present_urls() {
        let updates = run("MessageSid=SM1&From=%2B1&To=%2B2&NumMedia=4000000000&MediaUrl0=https%3A%2F%2Fx").unwrap();
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.body, "");
    }

    #[test]
    fn body_keeps_its_whitespace() {
        let updates = run("MessageSid=SM1&From=%2B1&To=%2B2&Body=+hi+there%0A").unwrap();
        let UpdateAction::Append(m) = &updates[0].action else { panic!() };
        assert_eq!(m.body, " hi there\n");
    }
}
