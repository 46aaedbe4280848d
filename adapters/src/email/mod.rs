//! Inbound email adapter (`email.<adapterKey>`, body = one raw RFC 5322 message).
//!
//! One delivery becomes one [`UpdateAction::Append`]. mail-parser does the MIME work (RFC 2047
//! encoded words, RFC 2231 parameters, quoted-printable and base64, nested multiparts, and
//! every common charset through its `full_encoding` feature: ISO-2022-JP, Shift_JIS, EUC-JP,
//! GB2312/GBK/GB18030, Big5, EUC-KR, KOI8-R/U, windows-125x, ISO-8859-x, UTF-7/16). Raw 8-bit
//! header fields and text parts without a known charset that are not UTF-8 are decoded as a
//! browser would (see the `charset` module).
//!
//! # The message
//!
//! - **idempotency key**: the `Message-ID` without `<>`, trimmed. Without one (or with one that
//!   is blank, contains white space or is over 512 bytes) it is `sha256:` and the hex SHA-256
//!   of the From, To and Cc addresses, the `Date` as written, the decoded Subject and the body
//!   text, each labelled and length-prefixed, so a redelivery of the same bytes gets the same
//!   key while two different mails do not;
//! - **body**: the `text/plain` body parts, or the `text/html` ones converted to text by
//!   [`html2text`] when there is no (non-blank) plain text; the choice of body parts follows
//!   JMAP (see the `mime` module). The full text is kept, with `\n` line breaks;
//!   `metadata.previewText` has it, on one line of at most [`PREVIEW_MAX_CHARS`] characters,
//!   without quoted history and signature (see [`quote`]) for the conversation list;
//! - **attachments**: every other leaf part, inline images included, with file name, media type,
//!   decoded size (a forwarded message without a file name is `<its Subject>.eml`, see the
//!   `filename` module), Content-ID (without `<>`), SHA-256 and `inline` (a `Content-Disposition:
//!   inline` part, or a part with a Content-ID inside a `multipart/related`). With
//!   [`EmailConfig::keep_attachment_content`] the bytes of attachments up to
//!   [`EmailConfig::max_attachment_bytes`] travel in [`crate::Attachment::content`]; the
//!   count of larger ones is `metadata.attachmentsTooLarge`;
//! - **sender**: the customer: `Reply-To` if present, else `From` (lower-cased address as `id`
//!   and `primary_email`; the display name of that header, else From's);
//! - **subject**: the decoded Subject;
//! - **occurred_at**: the `Date` header when it is valid and at most 24 hours after the
//!   delivery's `received_at` (a date far in the future would freeze forward-only timestamps);
//!   otherwise `received_at`, and the ignored value is kept as `metadata.ignoredDate`;
//! - **fingerprint**: [`crate::content_fingerprint`] of the message with the `Date` header as
//!   written (unfolded), so relayed copies match and a reused Message-ID on another mail does
//!   not;
//! - **direction**: always inbound here; [`refine`] makes it outbound once the entry point is
//!   known;
//! - **auto-replies and bounces** (see `auto_reply`): `is_auto_reply`, with
//!   `metadata.autoReply` = `auto_reply` or `bounce` and `metadata.autoReplyReason` naming the
//!   header (`Auto-Submitted: auto-replied`).
//!
//! # Entry point and thread
//!
//! The mailbox the mail was sent to is tried in this order, de-duplicated and capped at
//! [`MAX_CANDIDATES`]: the delivery's envelope recipient
//! ([`Delivery::external_channel_id`]), every `Delivered-To` (top first), `X-Original-To`,
//! `To`, `Cc`, and last `From` (so a copy of a mail sent from the mailbox finds it). Addresses
//! are lower-cased; `support+tag@example.com` is followed by `support@example.com`. The first
//! is [`NormalizedUpdate::external_channel_id`], the rest
//! [`NormalizedUpdate::fallback_channel_ids`].
//!
//! `thread.key` is `None` (a mail that references nothing known starts a conversation);
//! `thread.references` are the `References` ids (oldest first) then the `In-Reply-To` ids, so
//! the direct parent is last and wins, de-duplicated, without the message's own id, at most
//! the last [`MAX_REFERENCES`]. A recipient plus tag that is a UUID (intake replies with
//! `Reply-To: support+<conversationId>@…`) is `thread.conversation_id_hint`. Mails are never
//! threaded by subject.
//!
//! # Metadata
//!
//! `messageId`, `inReplyTo`, `references`, `from` (`{address, name}`), `to`, `cc`, `replyTo`
//! (arrays of `{address, name}`, at most [`MAX_LISTED_ADDRESSES`] each), `previewText`,
//! `hasHtml`, and when they apply `autoReply`, `autoReplyReason`, `ignoredDate`,
//! `attachmentsTooLarge` and `truncatedParts` (the MIME walk hit its limits: [`MAX_DEPTH`]
//! multipart levels, [`MAX_PARTS`] parts).
//!
//! # Errors
//!
//! A body that is empty, has no header fields, or whose header fields include none of the
//! standard ones (From, To, Date, Subject, Message-ID, Received, Content-Type, …) is not a
//! message: [`AdapterError::Malformed`]. Anything else is decoded as far as it goes: broken
//! MIME structure, unknown charsets (UTF-8 if valid, else guessed), bad encodings, missing
//! headers, a header block cut off without its final line break, an mbox `From ` line in front.
//! Decoding never panics (see [`decode`]) and allocates in proportion to the input (parsed
//! parts borrow from it or are decoded copies no larger than it); the body size itself is
//! limited by the worker (`INTAKE_MAX_MESSAGE_BYTES`).

mod address;
mod auto_reply;
mod charset;
mod filename;
mod html;
mod mime;
pub mod quote;

pub use address::MAX_CANDIDATES;
pub use mime::{MAX_DEPTH, MAX_PARTS};

use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    content_fingerprint, preview_of, AdapterError, ChannelAdapter, ChannelType, Delivery, Direction, EntryPointInfo,
    NormalizedMessage, NormalizedUpdate, Sender, ThreadRef, UpdateAction,
};

/// The adapter key (second word of the routing key `email.email`).
pub const ADAPTER_KEY: &str = "email";

/// At most this many references are kept (the newest).
pub const MAX_REFERENCES: usize = 50;
/// At most this many addresses are listed per header in the metadata.
pub const MAX_LISTED_ADDRESSES: usize = 100;
/// Longest `metadata.previewText`, in characters.
pub const PREVIEW_MAX_CHARS: usize = 500;
/// Longest Message-ID used as the idempotency key, in bytes; longer ones are hashed.
const MAX_MESSAGE_ID_BYTES: usize = 512;
/// How far after the delivery a `Date` header may be and still be believed.
const MAX_FUTURE_SKEW_HOURS: i64 = 24;

/// Settings of the email adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// Attachments larger than this keep their metadata only; their bytes are never kept.
    pub max_attachment_bytes: u64,
    /// Keep attachment bytes in [`crate::Attachment::content`] for the runtime's store.
    pub keep_attachment_content: bool,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig { max_attachment_bytes: 25 * 1024 * 1024, keep_attachment_content: false }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EmailAdapter {
    config: EmailConfig,
}

impl EmailAdapter {
    pub fn new(config: EmailConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &EmailConfig {
        &self.config
    }
}

/// Pure decode function, exposed for fuzzing.
///
/// Never panics: a panic inside the parsers (mail-parser 0.11.9 subtracts with overflow on a
/// quoted-printable part that ends in a soft line break right before its boundary, which
/// panics where overflow checks are on, as in debug builds) becomes
/// [`AdapterError::Malformed`].
pub fn decode(delivery: &Delivery<'_>, config: &EmailConfig) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| decode_unguarded(delivery, config))).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        Err(AdapterError::Malformed(format!("the message could not be parsed (parser failure: {reason})")))
    })
}

fn decode_unguarded(delivery: &Delivery<'_>, config: &EmailConfig) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    let raw = strip_mbox_postmark(delivery.body);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(AdapterError::Malformed("not an email: the body is empty".into()));
    }
    let raw = terminate_header_block(raw);
    let first = parse(raw.as_ref())?;
    // Raw 8-bit header fields: decoded as a browser would, then parsed again.
    let repaired = charset::repair_headers(raw.as_ref(), &first);
    let message = match &repaired {
        Some(repaired) => parse(repaired)?,
        None => first,
    };
    if !message.headers().iter().any(|h| !matches!(h.name, HeaderName::Other(_))) {
        return Err(AdapterError::Malformed(
            "not an email: none of the standard header fields (From, To, Date, Subject, Message-ID, …) found".into(),
        ));
    }
    Ok(vec![build(&message, delivery, config)])
}

fn parse(raw: &[u8]) -> Result<Message<'_>, AdapterError> {
    MessageParser::new()
        .parse(raw)
        .filter(|m| !m.parts.is_empty())
        .ok_or_else(|| AdapterError::Malformed("not an email: no header fields found".into()))
}

/// Mark messages sent from the mailbox itself (or an agent domain) as outbound.
///
/// A mail is outbound when its From address, plus tag removed, is the entry point's mailbox
/// (plus tag removed), or when its domain is one of the strings in the entry point's
/// `metadata.agentDomains` (case-insensitive, exact domain). Its sender is then the From
/// address (the agent), not the Reply-To (which, on intake's own mails, is the mailbox).
pub fn refine(update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
    let UpdateAction::Append(message) = &mut update.action else { return };
    let from = message.metadata.get("from");
    let Some(address) = from.and_then(|f| f.get("address")).and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    if !is_agent_address(&address, entry_point) {
        return;
    }
    let name = from.and_then(|f| f.get("name")).and_then(Value::as_str).map(str::to_owned);
    message.direction = Direction::Outbound;
    message.sender =
        Sender { id: Some(address.clone()), display_name: name, primary_email: Some(address), profile_image_url: None };
}

fn is_agent_address(from: &str, entry_point: &EntryPointInfo<'_>) -> bool {
    let mailbox = address::normalize(entry_point.external_channel_id)
        .unwrap_or_else(|| entry_point.external_channel_id.trim().to_lowercase());
    if address::without_plus(from) == address::without_plus(&mailbox) {
        return true;
    }
    let Some(domain) = address::domain(from) else { return false };
    entry_point.metadata.get("agentDomains").and_then(Value::as_array).is_some_and(|domains| {
        domains.iter().filter_map(Value::as_str).any(|d| d.trim().trim_start_matches('@').eq_ignore_ascii_case(domain))
    })
}

#[async_trait]
impl ChannelAdapter for EmailAdapter {
    fn channel_type(&self) -> ChannelType {
        ChannelType::Email
    }
    fn adapter_key(&self) -> &str {
        ADAPTER_KEY
    }
    async fn decode(&self, delivery: &Delivery<'_>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        decode(delivery, &self.config)
    }
    fn refine(&self, update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
        refine(update, entry_point)
    }
}

/// An mbox file's `From sender date` line before the headers is not part of the message.
fn strip_mbox_postmark(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        if let Some(end) = raw.iter().position(|&b| b == b'\n') {
            return &raw[end + 1..];
        }
    }
    raw
}

/// A message cut off inside its header block (no empty line, no final line break) still has
/// its last header field: mail-parser only takes fields that end with a line break.
fn terminate_header_block(raw: &[u8]) -> Cow<'_, [u8]> {
    let has_body = raw.windows(2).any(|w| w == b"\n\n") || raw.windows(3).any(|w| w == b"\n\r\n");
    if has_body || raw.ends_with(b"\n") {
        return Cow::Borrowed(raw);
    }
    let mut owned = Vec::with_capacity(raw.len() + 2);
    owned.extend_from_slice(raw);
    owned.extend_from_slice(b"\r\n");
    Cow::Owned(owned)
}

/// A mailbox from an address header.
#[derive(Debug, Clone)]
struct Mailbox {
    address: String,
    name: Option<String>,
}

impl Mailbox {
    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("address".into(), Value::String(self.address.clone()));
        if let Some(name) = &self.name {
            object.insert("name".into(), Value::String(name.clone()));
        }
        Value::Object(object)
    }
}

fn build(message: &Message<'_>, delivery: &Delivery<'_>, config: &EmailConfig) -> NormalizedUpdate {
    let content = mime::extract(message, config);
    let mut meta = Map::new();

    let from = mailboxes(message, HeaderName::From).into_iter().next();
    let reply_to = mailboxes(message, HeaderName::ReplyTo);
    let to = mailboxes(message, HeaderName::To);
    let cc = mailboxes(message, HeaderName::Cc);
    let subject = message.subject().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);

    // Entry point candidates.
    let mut candidates = address::Candidates::default();
    if let Some(envelope) = delivery.external_channel_id.map(str::trim).filter(|s| !s.is_empty()) {
        match address::normalize(envelope) {
            Some(a) => candidates.add_recipient(&a),
            None => candidates.add_recipient(&envelope.to_lowercase()),
        }
    }
    for header in ["Delivered-To", "X-Original-To"] {
        for value in raw_headers(message, header) {
            if let Some(a) = address::normalize(&value) {
                candidates.add_recipient(&a);
            }
        }
    }
    for mailbox in to.iter().chain(&cc) {
        candidates.add_recipient(&mailbox.address);
    }
    if let Some(from) = &from {
        candidates.add_sender(&from.address);
    }
    let conversation_id_hint = candidates.conversation_hint.take();
    let mut channel_ids = candidates.into_list().into_iter();
    let external_channel_id = channel_ids.next();
    let fallback_channel_ids: Vec<String> = channel_ids.collect();

    // Threading.
    let message_id = ids(message, HeaderName::MessageId).into_iter().next();
    let header_references = ids(message, HeaderName::References);
    let in_reply_to = ids(message, HeaderName::InReplyTo);
    // Newest first: an id keeps its last position; stop once enough are found.
    let mut seen = HashSet::new();
    let mut references: Vec<String> = Vec::new();
    for id in header_references.iter().chain(&in_reply_to).rev() {
        if references.len() == MAX_REFERENCES {
            break;
        }
        if Some(id) != message_id.as_ref() && seen.insert(id) {
            references.push(id.clone());
        }
    }
    references.reverse();

    // Idempotency key.
    let idempotency_key = match &message_id {
        Some(id) if id.len() <= MAX_MESSAGE_ID_BYTES && !id.chars().any(char::is_whitespace) => id.clone(),
        _ => content_key(message, from.as_ref(), &to, &cc, subject.as_deref(), &content.text),
    };

    // Time.
    let occurred_at = match header_date(message) {
        Some(date) if date <= delivery.received_at + Duration::hours(MAX_FUTURE_SKEW_HOURS) => date,
        _ => {
            if let Some(raw) = raw_headers(message, "Date").into_iter().next() {
                meta.insert("ignoredDate".into(), Value::String(raw));
            }
            delivery.received_at
        }
    };

    // Auto-replies and bounces.
    let root = &message.parts[0];
    let content_type = root.content_type();
    let media_type =
        content_type.map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase());
    let report_type = content_type.and_then(|ct| ct.attribute("report-type")).map(str::to_ascii_lowercase);
    let auto_submitted = raw_headers(message, "Auto-Submitted").into_iter().next();
    let x_autoreply = raw_headers(message, "X-Autoreply").into_iter().next();
    let x_autorespond = raw_headers(message, "X-Autorespond").into_iter().next();
    let precedence = raw_headers(message, "Precedence").into_iter().next();
    let return_path = raw_headers(message, "Return-Path").into_iter().next();
    let detection = auto_reply::detect(&auto_reply::Signals {
        auto_submitted: auto_submitted.as_deref(),
        x_autoreply: x_autoreply.as_deref(),
        x_autorespond: x_autorespond.as_deref(),
        precedence: precedence.as_deref(),
        content_type: media_type.as_deref(),
        report_type: report_type.as_deref(),
        has_delivery_status_part: content.has_delivery_status_part,
        from: from.as_ref().map(|f| f.address.as_str()),
        return_path: return_path.as_deref(),
    });

    // The customer.
    let customer = reply_to.first().or(from.as_ref());
    let sender = Sender {
        id: customer.map(|c| c.address.clone()),
        display_name: customer.and_then(|c| c.name.clone()).or_else(|| from.as_ref().and_then(|f| f.name.clone())),
        primary_email: customer.map(|c| c.address.clone()),
        profile_image_url: None,
    };

    // Metadata.
    if let Some(id) = &message_id {
        meta.insert("messageId".into(), Value::String(id.clone()));
    }
    if let Some(parent) = in_reply_to.first() {
        meta.insert("inReplyTo".into(), Value::String(parent.clone()));
    }
    if !header_references.is_empty() {
        let listed = &header_references[header_references.len().saturating_sub(MAX_REFERENCES)..];
        meta.insert("references".into(), json!(listed));
    }
    if let Some(from) = &from {
        meta.insert("from".into(), from.to_json());
    }
    for (key, list) in [("to", &to), ("cc", &cc), ("replyTo", &reply_to)] {
        if !list.is_empty() {
            meta.insert(
                key.into(),
                Value::Array(list.iter().take(MAX_LISTED_ADDRESSES).map(Mailbox::to_json).collect()),
            );
        }
    }
    if !content.text.trim().is_empty() {
        let stripped = quote::strip_quotes(&content.text);
        let source = if stripped.trim().is_empty() { content.text.as_str() } else { stripped.as_str() };
        meta.insert("previewText".into(), Value::String(preview_of(source, PREVIEW_MAX_CHARS)));
    }
    meta.insert("hasHtml".into(), Value::Bool(content.has_html));
    if let Some(detection) = &detection {
        meta.insert("autoReply".into(), Value::String(detection.kind.as_str().into()));
        meta.insert("autoReplyReason".into(), Value::String(detection.reason.clone()));
    }
    if content.too_large > 0 {
        meta.insert("attachmentsTooLarge".into(), json!(content.too_large));
    }
    if content.truncated {
        meta.insert("truncatedParts".into(), Value::Bool(true));
    }

    let mut normalized = NormalizedMessage {
        idempotency_key,
        direction: Direction::Inbound,
        sender,
        subject,
        body: content.text,
        attachments: content.attachments,
        occurred_at,
        is_auto_reply: detection.is_some(),
        metadata: meta,
        fingerprint: None,
    };
    // The Date as written, not as parsed: a copy relayed through more MTAs (each adding a
    // `Received:`) keeps it, a recycled Message-ID on another mail does not.
    let date_as_written = raw_headers(message, "Date").into_iter().next();
    normalized.fingerprint = Some(content_fingerprint(&normalized, date_as_written.as_deref()));

    NormalizedUpdate {
        external_channel_id,
        fallback_channel_ids,
        thread: ThreadRef { key: None, references, conversation_id_hint },
        action: UpdateAction::Append(normalized),
    }
}

/// The mailboxes of every header `name` (groups flattened), addresses normalized; entries
/// without a usable address are skipped.
fn mailboxes(message: &Message<'_>, name: HeaderName<'static>) -> Vec<Mailbox> {
    message
        .header_values(name)
        .filter_map(HeaderValue::as_address)
        .flat_map(Address::iter)
        .filter_map(|addr| {
            let address = address::normalize(addr.address()?)?;
            let name = addr.name().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
            Some(Mailbox { address, name })
        })
        .collect()
}

/// The message ids of every header `name`, in order, without `<>`.
fn ids(message: &Message<'_>, name: HeaderName<'static>) -> Vec<String> {
    let mut out = Vec::new();
    for value in message.header_values(name) {
        let list: &[Cow<'_, str>] = match value {
            HeaderValue::Text(id) => std::slice::from_ref(id),
            HeaderValue::TextList(ids) => ids,
            _ => &[],
        };
        out.extend(
            list.iter()
                .map(|id| id.trim().trim_matches(['<', '>']).trim())
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
        );
    }
    out
}

/// The values of every top-level header `name` (any case) as written, unfolded and trimmed.
fn raw_headers(message: &Message<'_>, name: &str) -> Vec<String> {
    message
        .headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .filter_map(|h| message.raw_message.get(h.offset_start as usize..h.offset_end as usize))
        .map(|bytes| {
            let text = String::from_utf8_lossy(bytes);
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// The `Date` header as a valid UTC time.
fn header_date(message: &Message<'_>) -> Option<DateTime<Utc>> {
    let date = message.date()?;
    NaiveDate::from_ymd_opt(date.year.into(), date.month.into(), date.day.into())?.and_hms_opt(
        date.hour.into(),
        date.minute.into(),
        date.second.into(),
    )?;
    if date.tz_hour > 23 || date.tz_minute > 59 {
        return None;
    }
    DateTime::from_timestamp(date.to_timestamp(), 0)
}

/// The idempotency key of a message without a usable Message-ID.
fn content_key(
    message: &Message<'_>,
    from: Option<&Mailbox>,
    to: &[Mailbox],
    cc: &[Mailbox],
    subject: Option<&str>,
    body: &str,
) -> String {
    let join = |list: &[Mailbox]| list.iter().map(|m| m.address.as_str()).collect::<Vec<_>>().join(",");
    let date = raw_headers(message, "Date").into_iter().next().unwrap_or_default();
    let (to, cc) = (join(to), join(cc));
    let fields: [(&str, &str); 6] = [
        ("from", from.map_or("", |f| f.address.as_str())),
        ("to", &to),
        ("cc", &cc),
        ("date", &date),
        ("subject", subject.unwrap_or_default()),
        ("body", body),
    ];
    let mut hasher = Sha256::new();
    for (label, value) in fields {
        hasher.update(label.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}
