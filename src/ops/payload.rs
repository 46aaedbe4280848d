//! A dead letter's payload and AMQP properties as text that is safe to show: size-capped,
//! JSON pretty-printed, everything else (MIME, forms, binary) as lossy UTF-8 text. The
//! templates escape it; nothing here is ever rendered as markup.

/// Most payload bytes a detail page shows.
pub(crate) const SHOWN_BYTES: usize = 64 * 1024;

pub(crate) struct Shown {
    pub text: String,
    /// `json` when the body was pretty-printed, else `text`.
    pub kind: &'static str,
    pub truncated: bool,
}

pub(crate) fn show(body: &[u8], content_type: Option<&str>) -> Shown {
    let truncated = body.len() > SHOWN_BYTES;
    let jsonish = content_type.is_some_and(|c| c.contains("json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{' || *b == b'[');
    if !truncated && jsonish {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            if pretty.len() <= SHOWN_BYTES * 2 {
                return Shown { text: pretty, kind: "json", truncated: false };
            }
        }
    }
    let mut end = body.len().min(SHOWN_BYTES);
    if truncated {
        // Back up over continuation bytes (at most 3) so the cut does not split a character.
        let mut back = 0;
        while back < 3 && end > 0 && (body[end] & 0b1100_0000) == 0b1000_0000 {
            end -= 1;
            back += 1;
        }
    }
    Shown { text: String::from_utf8_lossy(&body[..end]).into_owned(), kind: "text", truncated }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_pretty_and_big_bodies_are_cut() {
        let shown = show(br#"{"a":[1,2]}"#, Some("application/json"));
        assert_eq!(shown.kind, "json");
        assert!(shown.text.contains("\n  \"a\": ["));
        let big = vec![b'x'; SHOWN_BYTES + 10];
        let shown = show(&big, Some("text/plain"));
        assert!(shown.truncated);
        assert_eq!(shown.text.len(), SHOWN_BYTES);
        let mime = show(b"From: a@example.com\r\n\r\n<script>", Some("message/rfc822"));
        assert_eq!((mime.kind, mime.truncated), ("text", false));
        assert!(mime.text.contains("<script>"), "kept as text; the template escapes it");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut body = vec![b'a'; SHOWN_BYTES - 1];
        body.extend("é".repeat(10).as_bytes());
        let shown = show(&body, None);
        assert!(shown.truncated);
        assert!(!shown.text.contains('\u{FFFD}'), "no replacement character at the cut");
    }
}
