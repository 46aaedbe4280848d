//! Unlabeled 8-bit text, decoded as a browser would.
//!
//! RFC 5322 allows only ASCII in header fields, and RFC 2045 says a text part without a
//! `charset` is US-ASCII. Real mailers still write raw GB2312, Shift_JIS or Latin-1 bytes into
//! `Subject:`, display names and file names, and send 8-bit text parts without a label.
//! mail-parser reads such bytes as UTF-8 and turns them into U+FFFD. Here they are guessed
//! with `chardetng` (Firefox's detector) and decoded with `encoding_rs`, but only when they are
//! not valid UTF-8: valid UTF-8 (what modern mailers write, RFC 6532) stays as it is.
//!
//! Header fields are repaired before the message is used: every field whose raw bytes are not
//! UTF-8 is rewritten to UTF-8 in a copy of the message, which is then parsed again, so the
//! subject, the addresses, the file names and the headers of forwarded messages all come out
//! right through the one parser. One guess serves all such fields of a message: one mailer
//! wrote them, and a display name alone is too short to tell GBK from windows-1250.

use std::borrow::Cow;
use std::ops::Range;

use chardetng::EncodingDetector;
use encoding_rs::{Encoding, WINDOWS_1252};
use mail_parser::{Message, PartType};

/// The encoding a browser would pick for these bytes. Only ASCII-compatible encodings are
/// used (a header field's ASCII syntax must survive); anything else falls back to
/// windows-1252, which decodes every byte.
pub fn guess(sample: &[u8]) -> &'static Encoding {
    let mut detector = EncodingDetector::new();
    detector.feed(sample, true);
    let encoding = detector.guess(None, false);
    if encoding.is_ascii_compatible() {
        encoding
    } else {
        WINDOWS_1252
    }
}

/// `bytes` as text: as they are when they are UTF-8, else decoded with the guessed encoding.
pub fn decode_unlabeled(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => guess(bytes).decode_without_bom_handling(bytes).0,
    }
}

/// A copy of `raw` whose header fields are all UTF-8, or `None` when they already are.
///
/// `message` must be `raw` parsed. The header fields of nested messages that mail-parser read
/// from `raw` itself (a `message/rfc822` part without transfer encoding) are repaired too;
/// those it decoded from base64 or quoted-printable first live in another buffer and are left.
pub fn repair_headers(raw: &[u8], message: &Message<'_>) -> Option<Vec<u8>> {
    let mut ranges = Vec::new();
    collect_non_utf8_fields(raw, message, &mut ranges);
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_by_key(|r| (r.start, r.end));
    ranges.dedup_by(|later, earlier| later.start < earlier.end);

    let mut sample = Vec::new();
    for range in &ranges {
        sample.extend_from_slice(&raw[range.clone()]);
        sample.push(b'\n');
    }
    let encoding = guess(&sample);

    let mut repaired = Vec::with_capacity(raw.len() + raw.len() / 2);
    let mut copied = 0;
    for range in ranges {
        repaired.extend_from_slice(&raw[copied..range.start]);
        let (text, _) = encoding.decode_without_bom_handling(&raw[range.clone()]);
        repaired.extend_from_slice(text.as_bytes());
        copied = range.end;
    }
    repaired.extend_from_slice(&raw[copied..]);
    Some(repaired)
}

/// The byte ranges in `raw` of every header field value of `message` (nested messages parsed
/// from `raw` itself included) that is not valid UTF-8.
fn collect_non_utf8_fields(raw: &[u8], message: &Message<'_>, ranges: &mut Vec<Range<usize>>) {
    // A nested message decoded from a transfer encoding has offsets into its own buffer.
    if !std::ptr::eq(message.raw_message.as_ptr(), raw.as_ptr()) || message.raw_message.len() != raw.len() {
        return;
    }
    for part in &message.parts {
        for header in &part.headers {
            let range = header.offset_start as usize..header.offset_end as usize;
            if raw.get(range.clone()).is_some_and(|value| std::str::from_utf8(value).is_err()) {
                ranges.push(range);
            }
        }
        if let PartType::Message(nested) = &part.body {
            collect_non_utf8_fields(raw, nested, ranges);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stays_and_8bit_is_guessed() {
        assert!(matches!(decode_unlabeled("naïve 漢字".as_bytes()), Cow::Borrowed("naïve 漢字")));
        // 转发：整体提升企业服务水平 in GB2312.
        let gb2312 =
            b"\xd7\xaa\xb7\xa2\xa3\xba\xd5\xfb\xcc\xe5\xcc\xe1\xc9\xfd\xc6\xf3\xd2\xb5\xb7\xfe\xce\xf1\xcb\xae\xc6\xbd";
        assert_eq!(decode_unlabeled(gb2312), "转发：整体提升企业服务水平");
        // Café in Latin-1.
        assert_eq!(decode_unlabeled(b"Caf\xe9 au lait"), "Café au lait");
    }

    #[test]
    fn only_non_utf8_fields_are_rewritten() {
        let raw = b"From: \"\xb2\xe2\xca\xd4\" <a@example.com>\r\nTo: b@example.com\r\nSubject: \xd7\xaa\xb7\xa2\r\nX-Ok: \xc3\xa9\r\n\r\nbody\r\n";
        let message = mail_parser::MessageParser::new().parse(&raw[..]).unwrap();
        let repaired = repair_headers(raw, &message).expect("repaired");
        let text = String::from_utf8(repaired).expect("UTF-8 now");
        assert!(text.contains("Subject: 转发\r\n"), "{text}");
        assert!(text.contains("From: \"测试\" <a@example.com>"), "{text}");
        assert!(text.contains("X-Ok: é\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text}");
    }

    #[test]
    fn a_utf8_message_needs_no_repair() {
        let raw = "Subject: Grüße 漢字\r\n\r\nbody\r\n".as_bytes();
        let message = mail_parser::MessageParser::new().parse(raw).unwrap();
        assert_eq!(repair_headers(raw, &message), None);
    }
}
