//! Handing a received mail to RabbitMQ: trace headers in front of the message, the SMTP
//! envelope as publish headers, and a publish that counts only once the broker confirmed it.

use std::time::Duration;

use crate::amqp::envelope;
use crate::amqp::publish::{new_message_properties, LazyPublisher};

use super::recipients::Mailbox;

/// Publish headers carrying the SMTP envelope (the message's own headers may say otherwise).
pub const ENVELOPE_FROM: &str = "x-intake-envelope-from";
pub const ENVELOPE_TO: &str = "x-intake-envelope-to";

/// What the session knows about the transaction, for the trace headers.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `MAIL FROM` (empty for a bounce's null sender).
    pub mail_from: String,
    /// The client's HELO/EHLO/LHLO name.
    pub helo: String,
    pub peer: std::net::SocketAddr,
    /// This server's name.
    pub hostname: String,
    /// `ESMTP`, `ESMTPS`, `LMTP`, … (RFC 3848 names).
    pub protocol: &'static str,
    /// Identifies this transaction in our logs and in `Received:`.
    pub id: String,
}

/// The message as delivered to `recipient`: `Delivered-To:` and `Received:` (RFC 5321 §4.4)
/// prepended, the rest byte for byte as received.
pub fn with_trace_headers(envelope: &Envelope, recipient: &str, data: &[u8]) -> Vec<u8> {
    let date = chrono::Utc::now().to_rfc2822();
    let trace = format!(
        "Delivered-To: {recipient}\r\nReceived: from {helo} ({ip})\r\n\tby {host} (intake) with {proto} id {id}\r\n\tfor <{recipient}>; {date}\r\n",
        helo = sanitize(&envelope.helo),
        ip = envelope.peer.ip(),
        host = envelope.hostname,
        proto = envelope.protocol,
        id = envelope.id,
    );
    let mut out = Vec::with_capacity(trace.len() + data.len());
    out.extend_from_slice(trace.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A client-chosen name in a header: no line breaks, bounded.
fn sanitize(value: &str) -> String {
    let cleaned: String = value.chars().filter(|c| !c.is_control()).take(255).collect::<String>().trim().to_owned();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the broker did not take the message: {0:#}")]
    NotQueued(anyhow::Error),
    #[error("the broker did not confirm the message within {0:?}")]
    Unconfirmed(Duration),
}

/// Publish one copy of the mail for `mailbox`; `Ok` only once RabbitMQ confirmed it.
pub async fn publish(
    publisher: &LazyPublisher,
    exchange: &str,
    timeout: Duration,
    envelope: &Envelope,
    recipient: &str,
    mailbox: &Mailbox,
    data: &[u8],
) -> Result<(), DeliveryError> {
    let body = with_trace_headers(envelope, recipient, data);
    let headers = vec![
        (envelope::EXTERNAL_CHANNEL_ID, mailbox.external_channel_id.clone()),
        (envelope::PROJECT, mailbox.project_id.clone()),
        (envelope::ADAPTER, mailbox.adapter_key.clone()),
        (ENVELOPE_FROM, envelope.mail_from.clone()),
        (ENVELOPE_TO, recipient.to_owned()),
    ];
    let message_id = format!("{}.{}", envelope.id, mailbox.entry_point_id.simple());
    let properties = new_message_properties(&message_id, "message/rfc822", headers);
    let routing_key = format!("email.{}", mailbox.adapter_key);
    match tokio::time::timeout(timeout, publisher.publish(exchange, &routing_key, &body, properties)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DeliveryError::NotQueued(e)),
        Err(_) => Err(DeliveryError::Unconfirmed(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_go_in_front_and_cannot_be_forged_by_helo() {
        let envelope = Envelope {
            mail_from: "ada@example.org".into(),
            helo: "evil\r\nX-Injected: 1".into(),
            peer: "127.0.0.1:4000".parse().unwrap(),
            hostname: "mx.example.com".into(),
            protocol: "LMTP",
            id: "abc".into(),
        };
        let out =
            String::from_utf8(with_trace_headers(&envelope, "support@example.com", b"Subject: hi\r\n\r\nbody\r\n"))
                .unwrap();
        assert!(
            out.starts_with("Delivered-To: support@example.com\r\nReceived: from evilX-Injected: 1 (127.0.0.1)\r\n")
        );
        assert!(out.contains("by mx.example.com (intake) with LMTP id abc\r\n\tfor <support@example.com>; "));
        assert!(out.ends_with("\r\nSubject: hi\r\n\r\nbody\r\n"));
        assert!(!out.contains("\nX-Injected"));
    }
}
