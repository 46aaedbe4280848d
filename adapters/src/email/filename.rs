//! Attachment file names: the part's own, cleaned, and a name for forwarded messages that have
//! none.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::charset;

/// Name of a `message/rfc822` part with neither a file name nor a subject.
pub const FORWARDED_MESSAGE_NAME: &str = "forwarded-message.eml";
/// Longest name stem made from a subject, in bytes (names stay under the common 255-byte
/// file-system limit with room for the `.eml`).
const MAX_STEM_BYTES: usize = 200;

/// The file name of an attachment part: its own (`filename`/`name` parameter), cleaned; for a
/// forwarded message (`message/rfc822`) without one, `<inner Subject>.eml`, else
/// `<Content-Description>.eml` (a bounce's "Undelivered Message"), else
/// [`FORWARDED_MESSAGE_NAME`], as mail clients name them when saving.
pub fn of_part(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> Option<String> {
    if let Some(own) = part.attachment_name().and_then(clean) {
        return Some(own);
    }
    if ctype != "message" || !matches!(subtype, "rfc822" | "global") {
        return None;
    }
    let subject = match &part.body {
        PartType::Message(inner) => inner_subject(inner),
        _ => None,
    };
    let stem = subject.as_deref().or_else(|| part.content_description()).and_then(stem_from_text);
    Some(stem.map_or_else(|| FORWARDED_MESSAGE_NAME.to_owned(), |stem| format!("{stem}.eml")))
}

/// The Subject of a forwarded message. One sent base64- or quoted-printable-encoded was parsed
/// from its own buffer, which the outer message's header repair did not reach: its raw 8-bit
/// subject is repaired here.
fn inner_subject(inner: &Message<'_>) -> Option<String> {
    let subject = inner.subject()?;
    if !subject.contains('\u{FFFD}') {
        return Some(subject.to_owned());
    }
    let repaired = charset::repair_headers(&inner.raw_message, inner)
        .and_then(|raw| MessageParser::new().parse(&raw[..]).and_then(|m| m.subject().map(str::to_owned)));
    Some(repaired.unwrap_or_else(|| subject.to_owned()))
}

/// The last path segment of a file name, without control characters, at most 255 characters.
pub fn clean(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then(|| cleaned.to_owned())
}

/// A subject made fit to name a file: path separators become `_`, white space runs (folding,
/// tabs) one space, other control characters go, no leading dots (a hidden file) and at most
/// [`MAX_STEM_BYTES`]; `None` when nothing is left.
fn stem_from_text(text: &str) -> Option<String> {
    let mut stem = String::new();
    for word in text.split_whitespace() {
        if !stem.is_empty() {
            stem.push(' ');
        }
        stem.extend(word.chars().filter(|c| !c.is_control()).map(|c| if matches!(c, '/' | '\\') { '_' } else { c }));
    }
    let stem = stem.trim_start_matches('.').trim();
    let mut end = stem.len().min(MAX_STEM_BYTES);
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    let stem = stem[..end].trim_end();
    (!stem.is_empty()).then(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean("report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(clean("C:\\Users\\ann\\report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(clean("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(clean("a\u{0}b\r\n.txt").as_deref(), Some("ab.txt"));
        assert_eq!(clean("  "), None);
        assert_eq!(clean("dir/"), None);
        assert_eq!(clean("..").as_deref(), None);
        assert_eq!(clean(&"x".repeat(1000)).map(|s| s.len()), Some(255));
    }

    #[test]
    fn subjects_become_file_name_stems() {
        assert_eq!(
            stem_from_text("Call: HW-Anforderung; Best-nr.47524152").as_deref(),
            Some("Call: HW-Anforderung; Best-nr.47524152")
        );
        assert_eq!(stem_from_text("  Re: a/b\\c \t folded\r\n  line ").as_deref(), Some("Re: a_b_c folded line"));
        assert_eq!(stem_from_text("bell\u{7}\u{0}s").as_deref(), Some("bells"));
        assert_eq!(stem_from_text("..hidden").as_deref(), Some("hidden"));
        assert_eq!(stem_from_text(" \t "), None);
        assert_eq!(stem_from_text("..."), None);
        let long = stem_from_text(&"转".repeat(100)).unwrap();
        assert!(long.len() <= MAX_STEM_BYTES && long.chars().all(|c| c == '转'), "{long}");
    }
}
