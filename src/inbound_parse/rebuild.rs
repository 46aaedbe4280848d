//! Postmark's inbound JSON back into an RFC 5322 message, when the raw one was not included:
//! the original header fields Postmark lists (Message-ID, References, Received, …), the
//! addresses, subject and date from their fields, the text and HTML bodies as
//! `multipart/alternative`, and the attachments (with their Content-IDs) around them. Non-ASCII
//! header text becomes RFC 2047 encoded words; every body part is base64.

use base64::Engine;

use super::postmark::{Address, Inbound};

/// Header fields taken from the JSON fields rather than from `Headers` (which Postmark fills
/// with the rest), and those that describe the original MIME structure, rebuilt here.
const REBUILT: &[&str] =
    &["from", "to", "cc", "reply-to", "subject", "date", "mime-version", "content-type", "content-transfer-encoding"];

pub fn message(inbound: &Inbound) -> Vec<u8> {
    let mut out = String::new();
    for header in &inbound.headers {
        let name = header.name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            continue;
        }
        if REBUILT.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        field(&mut out, name, &text(&header.value));
    }
    if !inbound.headers.iter().any(|h| h.name.eq_ignore_ascii_case("message-id")) && !inbound.message_id.is_empty() {
        field(&mut out, "Message-ID", &format!("<{}@inbound.postmarkapp.com>", clean(&inbound.message_id)));
    }
    if let Some(from) = &inbound.from_full {
        field(&mut out, "From", &address(from));
    }
    for (name, list) in [("To", &inbound.to_full), ("Cc", &inbound.cc_full)] {
        if !list.is_empty() {
            field(&mut out, name, &list.iter().map(address).collect::<Vec<_>>().join(", "));
        }
    }
    if !inbound.reply_to.trim().is_empty() {
        field(&mut out, "Reply-To", &clean(&inbound.reply_to));
    }
    if !inbound.date.trim().is_empty() {
        field(&mut out, "Date", &clean(&inbound.date));
    }
    field(&mut out, "Subject", &text(&inbound.subject));
    field(&mut out, "MIME-Version", "1.0");

    let mut bodies = Vec::new();
    if !inbound.text_body.is_empty() || inbound.html_body.is_empty() {
        bodies.push(part("text/plain; charset=utf-8", &[], inbound.text_body.as_bytes()));
    }
    if !inbound.html_body.is_empty() {
        bodies.push(part("text/html; charset=utf-8", &[], inbound.html_body.as_bytes()));
    }
    let body = if bodies.len() == 1 { bodies.remove(0) } else { multipart("alternative", &bodies) };
    let body = if inbound.attachments.is_empty() {
        body
    } else {
        let mut parts = vec![body];
        for a in &inbound.attachments {
            let content = base64::engine::general_purpose::STANDARD.decode(a.content.trim()).unwrap_or_default();
            let content_type =
                if a.content_type.trim().is_empty() { "application/octet-stream" } else { a.content_type.trim() };
            let mut extra = vec![format!("Content-Disposition: attachment; filename=\"{}\"", quoted(&a.name))];
            if !a.content_id.trim().is_empty() {
                extra.push(format!("Content-ID: {}", clean(&a.content_id)));
            }
            parts.push(part(&format!("{}; name=\"{}\"", clean(content_type), quoted(&a.name)), &extra, &content));
        }
        multipart("mixed", &parts)
    };
    out.push_str(&body);
    out.into_bytes()
}

fn field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// A header value on one line.
fn clean(value: &str) -> String {
    value.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// Unstructured text, as an encoded word when it is not ASCII.
fn text(value: &str) -> String {
    let value = clean(value);
    if value.is_ascii() {
        value
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(value.as_bytes()))
    }
}

fn quoted(value: &str) -> String {
    clean(value).replace('\\', "\\\\").replace('"', "\\\"")
}

fn address(a: &Address) -> String {
    let email = clean(&a.email);
    let name = clean(&a.name);
    if name.is_empty() {
        email
    } else if name.is_ascii() {
        format!("\"{}\" <{email}>", quoted(&name))
    } else {
        format!("{} <{email}>", text(&name))
    }
}

/// A part: its header fields, a blank line, the content in base64 lines of 76.
fn part(content_type: &str, extra: &[String], content: &[u8]) -> String {
    let mut out = format!("Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n");
    for e in extra {
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

fn multipart(subtype: &str, parts: &[String]) -> String {
    let boundary = format!("=_intake_{}", uuid::Uuid::new_v4().simple());
    let mut out = format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n");
    for p in parts {
        out.push_str(&format!("--{boundary}\r\n{p}"));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}
