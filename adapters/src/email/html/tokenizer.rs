//! The tokenizer's rules the nesting estimate follows: where a tag and the text of a raw-text
//! element end.

pub(super) fn starts_alpha(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(u8::is_ascii_alphabetic)
}

pub(super) fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.get(..prefix.len()).is_some_and(|b| b.eq_ignore_ascii_case(prefix))
}

/// Where the tag whose name ends at `from` ends (the index of its `>`), and whether it ends in
/// `/>`, following the tokenizer's attribute states: a `>` inside a quoted value does not end it.
pub(super) fn tag_end(rest: &[u8], from: usize) -> Option<(usize, bool)> {
    #[derive(PartialEq)]
    enum State {
        BeforeName,
        Name,
        AfterName,
        BeforeValue,
        Quoted(u8),
        AfterQuoted,
        Unquoted,
        SelfClosing,
    }
    // Right after the tag name: like "before attribute name", except that `/` is self-closing.
    let mut state = State::AfterQuoted;
    let mut j = from;
    while j < rest.len() {
        let b = rest[j];
        let space = b.is_ascii_whitespace();
        state = match state {
            State::BeforeName | State::AfterQuoted if space => State::BeforeName,
            State::BeforeName | State::AfterQuoted | State::AfterName if b == b'/' => State::SelfClosing,
            State::BeforeName | State::AfterQuoted | State::AfterName if b == b'>' => return Some((j, false)),
            State::BeforeName | State::AfterQuoted => State::Name,
            State::Name if space => State::AfterName,
            State::Name if b == b'/' => State::SelfClosing,
            State::Name if b == b'>' => return Some((j, false)),
            State::Name | State::AfterName if b == b'=' => State::BeforeValue,
            State::Name => State::Name,
            State::AfterName if space => State::AfterName,
            State::AfterName => State::Name,
            State::BeforeValue if space => State::BeforeValue,
            State::BeforeValue if b == b'"' || b == b'\'' => State::Quoted(b),
            State::BeforeValue if b == b'>' => return Some((j, false)),
            State::BeforeValue => State::Unquoted,
            State::Quoted(q) if b == q => State::AfterQuoted,
            State::Quoted(q) => State::Quoted(q),
            State::Unquoted if space => State::BeforeName,
            State::Unquoted if b == b'>' => return Some((j, false)),
            State::Unquoted => State::Unquoted,
            State::SelfClosing if b == b'>' => return Some((j, true)),
            State::SelfClosing => {
                // Not `/>`: the character starts over "before attribute name".
                state = State::BeforeName;
                continue;
            }
        };
        j += 1;
    }
    None
}

/// Where the text of a raw-text element `name` ends: the offset of `</name` followed by white
/// space, `/` or `>`.
pub(super) fn raw_text_end(text: &[u8], name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].windows(2).position(|w| w == b"</") {
        let at = from + at;
        let after = &text[at + 2..];
        if starts_with_ignore_case(after, name.as_bytes())
            && after.get(name.len()).is_none_or(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
