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
//!
//! Japanese mailers also label Shift_JIS encoded words as ISO-2022-JP (a 7-bit charset):
//! encoded words with such a label whose bytes are 8-bit are guessed the same way.

use std::borrow::Cow;
use std::ops::Range;

use chardetng::EncodingDetector;
use encoding_rs::{Encoding, WINDOWS_1252};
use mail_parser::{HeaderName, Message, PartType};

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

/// A copy of `raw` whose header fields have no raw 8-bit text outside encoded words (left to
/// their own charset label) and no mislabelled encoded words, or `None` when there is nothing
/// to repair.
///
/// `message` must be `raw` parsed. The header fields of nested messages that mail-parser read
/// from `raw` itself (a `message/rfc822` part without transfer encoding) are repaired too;
/// those it decoded from base64 or quoted-printable first live in another buffer and are left.
pub fn repair_headers(raw: &[u8], message: &Message<'_>) -> Option<Vec<u8>> {
    let mut repairs = Vec::new();
    collect_repairs(raw, message, &mut repairs);
    if repairs.is_empty() {
        return None;
    }
    repairs.sort_by_key(|r| (r.range.start, r.range.end));
    repairs.dedup_by(|later, earlier| later.range.start < earlier.range.end);

    let mut sample = Vec::new();
    for repair in repairs.iter().filter(|r| r.text.is_none()) {
        sample.extend_from_slice(&repair.bytes);
        sample.push(b'\n');
    }
    let encoding = guess(&sample);

    let mut repaired = Vec::with_capacity(raw.len() + raw.len() / 2);
    let mut copied = 0;
    for repair in repairs {
        repaired.extend_from_slice(&raw[copied..repair.range.start]);
        let text = match &repair.text {
            Some(text) => Cow::Borrowed(text.as_str()),
            None => encoding.decode_without_bom_handling(&repair.bytes).0,
        };
        let inside_quotes = repair.range.start > 0 && raw[repair.range.start - 1] == b'"';
        if repair.in_address && !inside_quotes && text.contains(ADDRESS_SPECIALS) {
            // A display name that was one encoded word stays one phrase.
            repaired.push(b'"');
            repaired.extend_from_slice(text.replace('\\', "\\\\").replace('"', "\\\"").as_bytes());
            repaired.push(b'"');
        } else {
            repaired.extend_from_slice(text.as_bytes());
        }
        copied = repair.range.end;
    }
    repaired.extend_from_slice(&raw[copied..]);
    Some(repaired)
}

/// Characters that would change the meaning of a display name written bare.
const ADDRESS_SPECIALS: &[char] = &[',', ';', '<', '>', '"', '@', ':', '(', ')', '[', ']', '\\'];

/// Bytes of `raw` to replace by `bytes` decoded with the message's guessed encoding, or by
/// `text` where the charset is known after all.
struct Repair {
    range: Range<usize>,
    bytes: Vec<u8>,
    text: Option<String>,
    /// In an address header: a decoded encoded word may need quoting.
    in_address: bool,
}

/// The repairs of every header field of `message` (nested messages parsed from `raw` itself
/// included): runs of raw 8-bit text that are not UTF-8, and mislabelled encoded words.
fn collect_repairs(raw: &[u8], message: &Message<'_>, repairs: &mut Vec<Repair>) {
    // A nested message decoded from a transfer encoding has offsets into its own buffer.
    if !std::ptr::eq(message.raw_message.as_ptr(), raw.as_ptr()) || message.raw_message.len() != raw.len() {
        return;
    }
    for part in &message.parts {
        for header in &part.headers {
            let range = header.offset_start as usize..header.offset_end as usize;
            let Some(value) = raw.get(range.clone()) else { continue };
            let in_address = matches!(
                header.name,
                HeaderName::From
                    | HeaderName::To
                    | HeaderName::Cc
                    | HeaderName::Bcc
                    | HeaderName::ReplyTo
                    | HeaderName::Sender
            );
            let words = encoded_words(value);
            // Raw 8-bit bytes outside encoded words; inside one, its own label decodes them.
            let mut gaps = Vec::with_capacity(words.len() + 1);
            let mut outside = 0;
            for word in &words {
                gaps.push(outside..word.range.start);
                outside = word.range.end;
            }
            gaps.push(outside..value.len());
            for gap in gaps {
                if std::str::from_utf8(&value[gap.clone()]).is_err() {
                    let bytes = value[gap.clone()].to_vec();
                    let range = range.start + gap.start..range.start + gap.end;
                    // Raw text stands where the sender wrote it, quoted or not.
                    repairs.push(Repair { range, bytes, text: None, in_address: false });
                }
            }
            for word in words {
                if let Some(bytes) = mislabelled(&word) {
                    let range = range.start + word.range.start..range.start + word.range.end;
                    repairs.push(Repair { range, bytes, text: None, in_address });
                }
            }
            for label in utf7_labels(value) {
                let range = range.start + label.start..range.start + label.end;
                repairs.push(Repair { range, bytes: Vec::new(), text: Some("utf-7".into()), in_address: false });
            }
        }
        if let PartType::Message(nested) = &part.body {
            collect_repairs(raw, nested, repairs);
        }
    }
}

/// An RFC 2047 encoded word (`=?charset?B|Q?text?=`) in a header value.
struct EncodedWord<'v> {
    range: Range<usize>,
    charset: &'v [u8],
    encoding: u8,
    text: &'v [u8],
}

/// The encoded words of a header value, in order.
fn encoded_words(value: &[u8]) -> Vec<EncodedWord<'_>> {
    let mut words = Vec::new();
    let mut at = 0;
    while let Some(found) = find(&value[at..], b"=?") {
        let start = at + found;
        match encoded_word(value, start) {
            Some(word) => {
                at = word.range.end;
                words.push(word);
            }
            None => at = start + 2,
        }
    }
    words
}

/// The decoded bytes of an encoded word labelled with a 7-bit charset (ISO-2022-JP, ...) whose
/// bytes are 8-bit: Japanese mailers label Shift_JIS that way. They are guessed like raw 8-bit
/// text.
fn mislabelled(word: &EncodedWord<'_>) -> Option<Vec<u8>> {
    let label = word.charset.split(|&b| b == b'*').next().unwrap_or_default().to_ascii_lowercase();
    if !label.starts_with(b"iso-2022-") && label != b"csiso2022jp" {
        return None;
    }
    let bytes = match word.encoding.to_ascii_lowercase() {
        b'b' => mail_parser::decoders::base64::base64_decode(word.text),
        b'q' => Some(q_decode(word.text)),
        _ => None,
    };
    bytes.filter(|b| !b.is_ascii())
}

/// UTF-7's old names, which Exchange wrote in encoded words and mail-parser does not know.
const UTF7_ALIASES: [&[u8]; 3] = [b"=?unicode-1-1-utf-7?", b"=?unicode-2-0-utf-7?", b"=?x-unicode-2-0-utf-7?"];

/// Where a header value labels an encoded word with an old UTF-7 alias: the label, to be
/// renamed `utf-7` (a rename, not a decode, because such words are often not well-formed
/// enough for a strict scan — folded, with spaces — while mail-parser reads them).
fn utf7_labels(value: &[u8]) -> Vec<Range<usize>> {
    let lower = value.to_ascii_lowercase();
    let mut labels = Vec::new();
    for alias in UTF7_ALIASES {
        let mut at = 0;
        while let Some(found) = find(&lower[at..], alias) {
            let start = at + found + 2;
            labels.push(start..start + alias.len() - 3);
            at = start;
        }
    }
    labels
}

/// Longest charset label and encoded text looked at: RFC 2047 words are at most 75 bytes, and
/// bounded scans keep a header full of `=?` linear.
const MAX_LABEL_BYTES: usize = 64;
const MAX_WORD_TEXT_BYTES: usize = 256;

/// The encoded word starting at `start` (`=?`), if one does.
fn encoded_word(value: &[u8], start: usize) -> Option<EncodedWord<'_>> {
    let rest = value.get(start + 2..)?;
    let charset_len = rest.iter().take(MAX_LABEL_BYTES).position(|&b| b == b'?')?;
    let charset = &rest[..charset_len];
    if charset.is_empty() || charset.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let encoding = *rest.get(charset_len + 1)?;
    if rest.get(charset_len + 2) != Some(&b'?') {
        return None;
    }
    let text_start = charset_len + 3;
    // The text ends at `?=`, before any white space.
    let candidate = rest.get(text_start..)?;
    let candidate = &candidate[..candidate.len().min(MAX_WORD_TEXT_BYTES)];
    let candidate = &candidate[..candidate.iter().position(u8::is_ascii_whitespace).unwrap_or(candidate.len())];
    let text_len = find(candidate, b"?=")?;
    let text = &rest[text_start..text_start + text_len];
    Some(EncodedWord { range: start..start + 2 + text_start + text_len + 2, charset, encoding, text })
}

/// RFC 2047 "Q" decoding: `_` is a space, `=XX` a byte.
fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text.get(i + 1..i + 3).and_then(|hex| std::str::from_utf8(hex).ok());
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'='),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    fn seven_bit_labels_on_8bit_words_are_guessed() {
        // ツール EXAMPLE in Shift_JIS, labelled ISO-2022-JP (B), and テスト in Q.
        let raw = b"From: =?ISO-2022-JP?B?g2OBW4OLIEVYQU1QTEU=?= <bar@example.org>\r\n\
            Subject: =?iso-2022-jp?Q?=83e=83X=83g?=\r\nTo: =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?= <a@example.com>\r\n\r\nx\r\n";
        let message = mail_parser::MessageParser::new().parse(&raw[..]).unwrap();
        let repaired = repair_headers(raw, &message).expect("repaired");
        let message = mail_parser::MessageParser::new().parse(&repaired[..]).unwrap();
        assert_eq!(message.subject(), Some("テスト"));
        assert_eq!(message.from().and_then(|a| a.first()).and_then(|a| a.name()), Some("ツール EXAMPLE"));
        // A real (7-bit) ISO-2022-JP word is left to mail-parser.
        assert_eq!(message.to().and_then(|a| a.first()).and_then(|a| a.name()), Some("テスト"));
    }

    #[test]
    fn a_decoded_display_name_with_specials_is_quoted() {
        let raw = b"From: =?ISO-2022-JP?Q?Doe,_J=83e?= <j@example.org>\r\nSubject: x\r\n\r\nx\r\n";
        let message = mail_parser::MessageParser::new().parse(&raw[..]).unwrap();
        let repaired = repair_headers(raw, &message).expect("repaired");
        let message = mail_parser::MessageParser::new().parse(&repaired[..]).unwrap();
        let from: Vec<_> = message.from().unwrap().iter().map(|a| (a.name(), a.address())).collect();
        assert_eq!(from.len(), 1, "{from:?}");
        assert_eq!(from[0].1, Some("j@example.org"));
        assert!(from[0].0.is_some_and(|n| n.starts_with("Doe, ")), "{from:?}");
    }

    #[test]
    fn raw_8bit_inside_an_encoded_word_is_left_to_its_label() {
        // Outlook 2000 wrote a raw ö into an ISO-8859-1 Q word (mail-parser's legacy-016).
        let raw = b"From: a@example.com\r\nSubject: =?iso-8859-1?Q?Die_Fr\xf6sche?= und \xe4\r\n\r\nx\r\n";
        let message = mail_parser::MessageParser::new().parse(&raw[..]).unwrap();
        let repaired = repair_headers(raw, &message).expect("repaired");
        let message = mail_parser::MessageParser::new().parse(&repaired[..]).unwrap();
        assert_eq!(message.subject(), Some("Die Frösche und ä"));
    }

    #[test]
    fn an_old_utf7_alias_is_decoded_as_utf7() {
        // As Exchange wrote it: folded inside the word.
        let raw = b"Subject: Benachrichtung\r\n\tzum\r\n\t=?unicode-1-1-utf-7?Q?+ANw-bermittlungsstatus  \r\n\t(Fehlgeschlagen)?=\r\n\r\nx\r\n";
        let message = mail_parser::MessageParser::new().parse(&raw[..]).unwrap();
        let repaired = repair_headers(raw, &message).expect("a repair");
        let message = mail_parser::MessageParser::new().parse(&repaired[..]).unwrap();
        assert!(message.subject().unwrap().contains("Übermittlungsstatus"), "{:?}", message.subject());
    }

    #[test]
    fn a_utf8_message_needs_no_repair() {
        let raw = "Subject: Grüße 漢字\r\n\r\nbody\r\n".as_bytes();
        let message = mail_parser::MessageParser::new().parse(raw).unwrap();
        assert_eq!(repair_headers(raw, &message), None);
    }
}
