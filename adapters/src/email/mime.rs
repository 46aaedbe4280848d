//! Walking the MIME tree: which parts make the body, which are attachments.
//!
//! Body parts are chosen as JMAP does (RFC 8621 §4.1.4): in a `multipart/alternative` the
//! `text/plain` alternative is the body and the `text/html` one is not an attachment; inline
//! text parts of a `multipart/mixed` are concatenated; the first part of a `multipart/related`
//! is the body and the rest (images referenced by `cid:`) are its inline resources. The body
//! text is the `text/plain` body parts, HTML body parts converted to text when a message has
//! no (non-blank) plain text. Every other leaf part is an attachment, including nested
//! messages (`message/rfc822`) and the parts of a bounce report.
//!
//! The walk is bounded: it descends at most [`MAX_DEPTH`] multipart levels and looks at most at
//! [`MAX_PARTS`] parts; what lies beyond is ignored and the message is flagged
//! `truncatedParts`. mail-parser itself parses nested `message/rfc822` parts only three levels
//! deep. Memory stays proportional to the input: parts borrow from it or are decoded copies no
//! larger than it.

use std::borrow::Cow;
use std::collections::HashSet;

use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use mail_parser::decoders::charsets::map::charset_decoder;

use super::{charset, filename, html};
use crate::email::EmailConfig;
use crate::{Attachment, AttachmentContent};

/// Deepest multipart nesting walked.
pub const MAX_DEPTH: usize = 100;
/// Most MIME parts looked at in one message.
pub const MAX_PARTS: usize = 1000;

/// What the MIME tree yields.
#[derive(Debug, Default)]
pub struct Content {
    /// The body as plain text.
    pub text: String,
    /// Whether the message has an HTML body.
    pub has_html: bool,
    pub attachments: Vec<Attachment>,
    /// Attachments whose bytes were not kept because they are over the size limit.
    pub too_large: usize,
    /// The walk stopped at [`MAX_DEPTH`] or [`MAX_PARTS`].
    pub truncated: bool,
    /// Some part is a `message/delivery-status` (a bounce report).
    pub has_delivery_status_part: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multipart {
    Mixed,
    Alternative,
    Related,
}

/// A leaf part met on the walk.
struct Leaf {
    id: u32,
    in_related: bool,
}

#[derive(Default)]
struct Walk {
    visited: usize,
    truncated: bool,
    leaves: Vec<Leaf>,
}

/// The media type of a part, lower-cased, with mail-parser's defaults: `text/plain` without a
/// `Content-Type` or for a multipart whose boundary never comes (mail-parser reads it as
/// text), `message/rfc822` for a part it parsed as a message.
fn media_type(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) if ct.ctype().eq_ignore_ascii_case("multipart") && !part.is_multipart() => {
            ("text".into(), "plain".into())
        }
        Some(ct) => (ct.ctype().to_ascii_lowercase(), ct.subtype().unwrap_or_default().to_ascii_lowercase()),
        None if matches!(part.body, PartType::Message(_)) => ("message".into(), "rfc822".into()),
        None => ("text".into(), "plain".into()),
    }
}

fn is_attachment_disposition(part: &MessagePart<'_>) -> bool {
    part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
}

fn is_inline_disposition(part: &MessagePart<'_>) -> bool {
    part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"))
}

/// JMAP's `parseStructure`. `text` and `html` are the body lists; a call that meets a plain
/// (HTML) part inside an alternative stops adding to its HTML (plain) list, as the JavaScript
/// reference does by rebinding its local variable.
#[allow(clippy::too_many_arguments)]
fn walk(
    message: &Message<'_>,
    state: &mut Walk,
    ids: &[u32],
    parent: Option<u32>,
    kind: Multipart,
    in_alternative: bool,
    mut text: Option<&mut Vec<u32>>,
    mut html: Option<&mut Vec<u32>>,
    depth: usize,
) {
    let text_len = text.as_ref().map_or(0, |t| t.len());
    let html_len = html.as_ref().map_or(0, |h| h.len());
    for (i, &id) in ids.iter().enumerate() {
        if state.visited >= MAX_PARTS {
            state.truncated = true;
            return;
        }
        // Sub-parts always come after their parent; anything else is not a tree.
        if parent.is_some_and(|p| id <= p) {
            continue;
        }
        let Some(part) = message.parts.get(id as usize) else { continue };
        state.visited += 1;
        let (ctype, subtype) = media_type(part);
        if let PartType::Multipart(children) = &part.body {
            if depth >= MAX_DEPTH {
                state.truncated = true;
                continue;
            }
            let sub = match subtype.as_str() {
                "alternative" => Multipart::Alternative,
                "related" => Multipart::Related,
                _ => Multipart::Mixed,
            };
            walk(
                message,
                state,
                children,
                Some(id),
                sub,
                in_alternative || sub == Multipart::Alternative,
                text.as_deref_mut(),
                html.as_deref_mut(),
                depth + 1,
            );
            continue;
        }
        state.leaves.push(Leaf { id, in_related: kind == Multipart::Related });
        let is_plain = ctype == "text" && subtype == "plain";
        let is_html = ctype == "text" && subtype == "html";
        let is_media = matches!(ctype.as_str(), "image" | "audio" | "video");
        let is_inline = !is_attachment_disposition(part)
            && (is_plain || is_html || is_media)
            && (i == 0 || (kind != Multipart::Related && (is_media || part.attachment_name().is_none())));
        if !is_inline {
            continue;
        }
        if kind == Multipart::Alternative {
            let list = if is_plain { text.as_deref_mut() } else { html.as_deref_mut().filter(|_| is_html) };
            if let Some(list) = list {
                list.push(id);
            }
            continue;
        }
        if in_alternative {
            if is_plain {
                html = None;
            }
            if is_html {
                text = None;
            }
        }
        for list in [text.as_deref_mut(), html.as_deref_mut()].into_iter().flatten() {
            list.push(id);
        }
    }
    if kind == Multipart::Alternative {
        if let (Some(text), Some(html)) = (text, html) {
            // Only HTML found: it is the text body too; only plain text: the HTML body too.
            if text.len() == text_len && html.len() != html_len {
                let added: Vec<u32> = html[html_len..].to_vec();
                text.extend(added);
            } else if html.len() == html_len && text.len() != text_len {
                let added: Vec<u32> = text[text_len..].to_vec();
                html.extend(added);
            }
        }
    }
}

/// Walk the message and build its body text and attachments.
pub fn extract(message: &Message<'_>, config: &EmailConfig) -> Content {
    let mut state = Walk::default();
    let (mut text_ids, mut html_ids) = (Vec::new(), Vec::new());
    walk(message, &mut state, &[0], None, Multipart::Mixed, false, Some(&mut text_ids), Some(&mut html_ids), 0);

    let is_text_part = |id: &u32| {
        message.parts.get(*id as usize).is_some_and(|p| matches!(p.body, PartType::Text(_) | PartType::Html(_)))
    };
    let body_ids: HashSet<u32> = text_ids.iter().chain(&html_ids).copied().filter(is_text_part).collect();

    let mut content = Content {
        text: body_text(message, &text_ids),
        has_html: html_ids.iter().any(|id| matches!(message.parts.get(*id as usize), Some(p) if p.is_text_html())),
        truncated: state.truncated,
        ..Default::default()
    };
    if content.text.trim().is_empty() {
        // An empty text/plain alternative next to a real HTML one.
        let from_html = body_text(message, &html_ids);
        if !from_html.trim().is_empty() {
            content.text = from_html;
        }
    }

    for leaf in &state.leaves {
        if body_ids.contains(&leaf.id) {
            continue;
        }
        let Some(part) = message.parts.get(leaf.id as usize) else { continue };
        let (ctype, subtype) = media_type(part);
        if ctype == "message" && matches!(subtype.as_str(), "delivery-status" | "global-delivery-status") {
            content.has_delivery_status_part = true;
        }
        let bytes = part_bytes(message, part);
        let filename = filename::of_part(part, &ctype, &subtype);
        let content_id =
            part.content_id().map(|id| id.trim().trim_matches(['<', '>']).to_owned()).filter(|id| !id.is_empty());
        if bytes.is_empty() && filename.is_none() && content_id.is_none() {
            // Empty leftovers of a broken structure (a lone boundary, an empty preamble part).
            continue;
        }
        let size = bytes.len() as u64;
        let keep = config.keep_attachment_content && size <= config.max_attachment_bytes;
        if config.keep_attachment_content && !keep {
            content.too_large += 1;
        }
        content.attachments.push(Attachment {
            filename,
            content_type: Some(if subtype.is_empty() { ctype } else { format!("{ctype}/{subtype}") }),
            size: Some(size),
            inline: is_inline_disposition(part) || (leaf.in_related && content_id.is_some()),
            content_id,
            sha256: Some(hex::encode(Sha256::digest(&bytes))),
            url: None,
            storage_key: None,
            content: keep.then(|| AttachmentContent(bytes.into_owned())),
        });
    }
    content
}

/// The plain text of the given body parts, HTML converted, joined by blank lines, with `\n`
/// line breaks.
fn body_text(message: &Message<'_>, ids: &[u32]) -> String {
    let mut out = String::new();
    for id in ids {
        let Some(part) = message.parts.get(*id as usize) else { continue };
        let piece: Cow<'_, str> = match &part.body {
            PartType::Text(text) => unlabeled_text(message, part).unwrap_or(Cow::Borrowed(text.as_ref())),
            PartType::Html(markup) => {
                let markup = unlabeled_text(message, part).unwrap_or(Cow::Borrowed(markup.as_ref()));
                Cow::Owned(html::html_to_text(&markup))
            }
            _ => continue,
        };
        let piece = piece.trim_end();
        if piece.trim().is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        // Line breaks as `\n`: mail is written with CRLF, stored text is not.
        let piece = piece.trim_start_matches(['\r', '\n']);
        if piece.contains('\r') {
            out.push_str(&piece.replace("\r\n", "\n").replace('\r', "\n"));
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// A text part without a charset mail-parser knows, whose bytes are not UTF-8 (mail-parser
/// made U+FFFD of them): its text, decoded as a browser would.
fn unlabeled_text<'m>(message: &'m Message<'_>, part: &'m MessagePart<'_>) -> Option<Cow<'m, str>> {
    let text = match &part.body {
        PartType::Text(text) | PartType::Html(text) => text,
        _ => return None,
    };
    let labeled = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .is_some_and(|label| charset_decoder(label.trim().as_bytes()).is_some() || is_utf8_label(label));
    if labeled || !text.contains('\u{FFFD}') {
        return None;
    }
    let bytes = part_bytes(message, part);
    Some(Cow::Owned(charset::decode_unlabeled(&bytes).into_owned()))
}

/// mail-parser reads UTF-8 itself, without a decoder from its charset table.
fn is_utf8_label(label: &str) -> bool {
    let label = label.trim();
    label.eq_ignore_ascii_case("utf-8") || label.eq_ignore_ascii_case("utf8")
}

/// The decoded bytes of a leaf part as they were sent. mail-parser hands text parts over
/// converted to UTF-8; an attachment keeps its own charset, so text parts are decoded again
/// from the raw message (transfer encoding only).
fn part_bytes<'m>(message: &'m Message<'_>, part: &'m MessagePart<'_>) -> Cow<'m, [u8]> {
    if matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
        let raw = message.raw_message.get(part.offset_body as usize..part.offset_end as usize);
        let decoded = match (raw, part.encoding) {
            (Some(raw), Encoding::None) => Some(Cow::Borrowed(raw)),
            (Some(raw), Encoding::Base64) => mail_parser::decoders::base64::base64_decode(raw).map(Cow::Owned),
            (Some(raw), Encoding::QuotedPrintable) => {
                mail_parser::decoders::quoted_printable::quoted_printable_decode(raw).map(Cow::Owned)
            }
            (None, _) => None,
        };
        if let Some(bytes) = decoded {
            return bytes;
        }
    }
    Cow::Borrowed(part.contents())
}
