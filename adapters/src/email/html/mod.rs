//! HTML bodies to plain text.
//!
//! [`html2text`] (an HTML5 parser and a layout engine) does the work: paragraphs, lists, tables,
//! `<blockquote>` as `> ` lines (so the quote stripper sees them), links as numbered footnotes.
//! Some of its layout steps recurse over the element tree, and a hostile message could nest
//! elements deep enough to overflow the stack, which would abort the worker; a table of
//! thousands of columns is laid out one cell per block, each under a full-width rule, which
//! multiplies the size twentyfold. So HTML that nests deeper than [`MAX_NESTING`] or is larger
//! than [`MAX_HTML_BYTES`], and any conversion that comes out more than twice as large as its
//! input, goes through mail-parser's simple tag stripper instead: flat text, but never a crash
//! and never larger than the HTML.

/// Larger HTML bodies are converted by the simple tag stripper.
pub const MAX_HTML_BYTES: usize = 1024 * 1024;
/// HTML whose open elements nest deeper than this is converted by the simple tag stripper.
pub const MAX_NESTING: usize = 256;
/// Line width of the rendered text. Wide enough that prose is rarely re-wrapped; narrow
/// enough that a row of `<hr>` cannot blow up (a rule is drawn this wide).
const WIDTH: usize = 200;

/// The parsed document may nest at most this deep to be laid out by [`html2text`] (the element
/// nesting of [`MAX_NESTING`] plus what the parser adds itself: `<html>`, `<body>`, `<tbody>`…).
const MAX_DOM_DEPTH: usize = 2 * MAX_NESTING;

/// The text of an HTML body.
pub fn html_to_text(html: &str) -> String {
    if html.len() <= MAX_HTML_BYTES && max_nesting(html) <= MAX_NESTING {
        if let Some(text) = render(html) {
            if text.len() <= 2 * html.len() + 4096 {
                return tidy(&text);
            }
        }
    }
    tidy(&mail_parser::decoders::html::html_to_text(html))
}

/// html2text's conversion, or `None` when it fails or the parsed document nests deeper than
/// [`MAX_DOM_DEPTH`]: the estimate decides whether parsing is cheap, this check (on the real
/// tree) keeps the recursive layout from overflowing the stack whatever the estimate missed.
fn render(html: &str) -> Option<String> {
    let config = html2text::config::plain();
    let dom = config.parse_html(html.as_bytes()).ok()?;
    if dom_depth(&dom.document) > MAX_DOM_DEPTH {
        return None;
    }
    let tree = config.dom_to_render_tree(&dom).ok()?;
    config.render_to_string(tree, WIDTH).ok()
}

/// How deep a parsed document nests, without recursion.
fn dom_depth(root: &html2text::Handle) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(root.clone(), 0usize)];
    while let Some((node, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        pending.extend(node.children.borrow().iter().map(|child| (child.clone(), depth + 1)));
    }
    deepest
}

/// An estimate of how deep html5ever's stack of open elements gets, made to err on the high
/// side, saturating at `MAX_NESTING + 1`. html5ever scans that stack for most tags, so parsing
/// takes time proportional to tags × depth: fuzzing found 180 KB of `<div></x>` that a count of
/// start minus end tags called flat taking minutes. So this follows the parser's rules that
/// decide depth, on a stack of its own:
///
/// - an end tag closes the innermost open element of its name, with everything inside it, only
///   when no element that stops the parser's search (`<td>`, `<table>`, `<div>` for a `</span>`,
///   …) is in between; otherwise it is ignored, as is `</body>`/`</html>`;
/// - an end tag of a formatting element (`</b>`, `</a>`, …) closes only that element (the
///   parser's adoption agency keeps the blocks opened inside it open); formatting elements
///   closed by an outer end tag are re-opened at the next text or tag, at most three alike;
/// - `/>` closes only void elements, and elements inside `<svg>`/`<math>`: `<div/>` opens;
/// - the text of `<script>`, `<style>`, `<textarea>`, `<title>`, … holds no tags, and the value
///   of a quoted attribute none either;
/// - `<p>`, `<li>`, `<td>`, `<tr>`, `<option>`, … close the open one they replace.
///
/// What it cannot follow (script text with `<!--`, raw-text tags inside `<svg>`) counts as too
/// deep. Whatever the estimate, [`html_to_text`] checks the depth of the parsed document again
/// before laying it out.
pub fn max_nesting(html: &str) -> usize {
    let too_deep = MAX_NESTING + 1;
    let bytes = html.as_bytes();
    let mut stack: Vec<Open> = Vec::new();
    // Formatting elements closed by an outer end tag, re-opened by the next text or tag.
    let mut reopen: Vec<Open> = Vec::new();
    let mut max = 0usize;
    // `i` is where to look for the next `<`, `text` where the text after the last tag starts.
    let (mut i, mut text) = (0, 0);
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'<') {
        let text_before = i + offset > text;
        i += offset + 1;
        let rest = &bytes[i..];
        if rest.starts_with(b"!--") {
            // A comment ends at `-->` or `--!>`; `<!-->` and `<!--->` are empty ones.
            let end = (1..rest.len()).find(|&j| rest[j..].starts_with(b"-->") || rest[j..].starts_with(b"--!>"));
            match end {
                Some(j) => i += j + 2,
                None => break,
            }
            text = i + 1;
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = usize::from(closing);
        if rest.first().is_some_and(|&b| b == b'!' || b == b'?') || (closing && !starts_alpha(&rest[1..])) {
            // <!DOCTYPE …>, <?xml …?>, </ …>: a bogus comment up to the next `>`.
            if starts_with_ignore_case(rest, b"![cdata[") && in_foreign(&stack) {
                return too_deep; // a CDATA section, which ends at `]]>`
            }
            match rest.iter().position(|&b| b == b'>') {
                Some(end) => i += end,
                None => break,
            }
            text = i + 1;
            continue;
        }
        if !starts_alpha(&rest[name_start..]) {
            continue; // `a < b`: text
        }
        if text_before {
            reopen_formatting(&mut stack, &mut reopen);
        }
        let name_len =
            rest[name_start..].iter().take_while(|&&b| !(b.is_ascii_whitespace() || b == b'/' || b == b'>')).count();
        let name = String::from_utf8_lossy(&rest[name_start..name_start + name_len]).to_ascii_lowercase();
        let Some((end, self_closed)) = tag_end(rest, name_start + name_len) else {
            break; // cut off inside the tag: the parser drops it
        };
        i += end;
        text = i + 1;
        if closing {
            close(&mut stack, &mut reopen, &name);
        } else {
            let attributes = String::from_utf8_lossy(&rest[name_start + name_len..end]).into_owned();
            match open(&mut stack, &mut reopen, name, attributes, self_closed) {
                Opened::Element => {}
                Opened::RawText(name) => {
                    // Skip the text up to the matching end tag; without one the rest is text.
                    match raw_text_end(&bytes[i + 1..], &name) {
                        Some(at) if name == "script" && find(&bytes[i + 1..i + 1 + at], b"<!--").is_some() => {
                            return too_deep; // script text has escapes of its own
                        }
                        Some(at) => {
                            i += 1 + at;
                            text = i;
                        }
                        None => break,
                    }
                }
                Opened::PlainText => {
                    max = max.max(stack.len());
                    break;
                }
                Opened::TooComplex => return too_deep,
            }
        }
        max = max.max(stack.len());
        if max > MAX_NESTING {
            return too_deep;
        }
    }
    max.min(too_deep)
}

/// An element on the estimate's stack; `key` (name and attributes) for formatting elements.
#[derive(Clone)]
struct Open {
    name: String,
    key: Option<String>,
}

enum Opened {
    Element,
    RawText(String),
    PlainText,
    TooComplex,
}

const VOID: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img", "input", "keygen",
    "link", "meta", "param", "source", "track", "wbr",
];
const FORMATTING: &[&str] =
    &["a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u"];
/// Their content is text up to the matching end tag (in HTML, not inside `<svg>`/`<math>`).
const RAW_TEXT: &[&str] = &["iframe", "noembed", "noframes", "noscript", "script", "style", "textarea", "title", "xmp"];
/// The parser's "special" elements: an end tag of another element never closes past them.
const SPECIAL: &[&str] = &[
    "address",
    "applet",
    "area",
    "article",
    "aside",
    "base",
    "basefont",
    "bgsound",
    "blockquote",
    "body",
    "br",
    "button",
    "caption",
    "center",
    "col",
    "colgroup",
    "dd",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "dt",
    "embed",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frame",
    "frameset",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "iframe",
    "img",
    "input",
    "keygen",
    "li",
    "link",
    "listing",
    "main",
    "marquee",
    "menu",
    "meta",
    "nav",
    "noembed",
    "noframes",
    "noscript",
    "object",
    "ol",
    "p",
    "param",
    "plaintext",
    "pre",
    "script",
    "search",
    "section",
    "select",
    "source",
    "style",
    "summary",
    "table",
    "tbody",
    "td",
    "template",
    "textarea",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "track",
    "ul",
    "wbr",
    "xmp",
    "mi",
    "mo",
    "mn",
    "ms",
    "mtext",
    "annotation-xml",
    "foreignobject",
    "desc",
    "svg",
    "math",
];
/// Where the parser's default scope ends.
const SCOPE: &[&str] = &[
    "applet",
    "caption",
    "html",
    "table",
    "td",
    "th",
    "marquee",
    "object",
    "template",
    "mi",
    "mo",
    "mn",
    "ms",
    "mtext",
    "annotation-xml",
    "foreignobject",
    "desc",
    "title",
    "svg",
    "math",
];
const TABLE_SCOPE: &[&str] = &["html", "table", "template"];
const TABLE_PARTS: &[&str] = &["caption", "colgroup", "table", "tbody", "td", "tfoot", "th", "thead", "tr"];
/// Start tags that close an open `<p>` (in button scope).
const CLOSES_P: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "dd",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "li",
    "listing",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "plaintext",
    "pre",
    "search",
    "section",
    "summary",
    "ul",
    "xmp",
];
const HEADINGS: &[&str] = &["h1", "h2", "h3", "h4", "h5", "h6"];
/// Inside these, the content is HTML again.
const INTEGRATION_POINTS: &[&str] =
    &["annotation-xml", "desc", "foreignobject", "mi", "mn", "mo", "ms", "mtext", "title"];
/// HTML start tags that end `<svg>`/`<math>` content.
const BREAKOUT: &[&str] = &[
    "b",
    "big",
    "blockquote",
    "body",
    "br",
    "center",
    "code",
    "dd",
    "div",
    "dl",
    "dt",
    "em",
    "embed",
    "font",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "hr",
    "i",
    "img",
    "li",
    "listing",
    "menu",
    "meta",
    "nobr",
    "ol",
    "p",
    "pre",
    "ruby",
    "s",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "table",
    "tt",
    "u",
    "ul",
    "var",
];

fn is(list: &[&str], name: &str) -> bool {
    list.contains(&name)
}

fn starts_alpha(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(u8::is_ascii_alphabetic)
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.get(..prefix.len()).is_some_and(|b| b.eq_ignore_ascii_case(prefix))
}

/// Whether the innermost `<svg>`/`<math>` or integration point open is `<svg>`/`<math>`.
fn in_foreign(stack: &[Open]) -> bool {
    stack
        .iter()
        .rev()
        .find(|o| o.name == "svg" || o.name == "math" || is(INTEGRATION_POINTS, &o.name))
        .is_some_and(|o| o.name == "svg" || o.name == "math")
}

/// The innermost open `name` with none of `boundaries` inside it.
fn in_scope(stack: &[Open], names: &[&str], boundaries: &[&str]) -> Option<usize> {
    for (at, open) in stack.iter().enumerate().rev() {
        if is(names, &open.name) {
            return Some(at);
        }
        if is(boundaries, &open.name) {
            return None;
        }
    }
    None
}

/// Close `stack[at..]`; the formatting elements among them are re-opened later.
fn truncate(stack: &mut Vec<Open>, reopen: &mut Vec<Open>, at: usize) {
    reopen.extend(stack.drain(at..).filter(|o| o.key.is_some()));
}

fn reopen_formatting(stack: &mut Vec<Open>, reopen: &mut Vec<Open>) {
    stack.append(reopen);
}

fn close(stack: &mut Vec<Open>, reopen: &mut Vec<Open>, name: &str) {
    if matches!(name, "html" | "head" | "body" | "br") {
        return;
    }
    if is(FORMATTING, name) {
        if let Some(at) = in_scope(stack, &[name], SCOPE) {
            stack.remove(at);
        } else if !stack.iter().any(|o| o.name == name) {
            // Closed earlier by an outer end tag: no longer re-opened.
            if let Some(at) = reopen.iter().rposition(|o| o.name == name) {
                reopen.remove(at);
            }
        }
        return;
    }
    // No open element of that name: ignored whatever the scope rules say. Checked first because
    // the scope walks below compare every open element with long lists (`</x>` × many, deep).
    if !stack.iter().any(|o| o.name == name) {
        return;
    }
    let found = if is(TABLE_PARTS, name) {
        in_scope(stack, &[name], TABLE_SCOPE)
    } else if name == "p" {
        in_scope(stack, &["p"], &[SCOPE, &["button"]].concat())
    } else if name == "li" {
        in_scope(stack, &["li"], &[SCOPE, &["ol", "ul"]].concat())
    } else if is(SPECIAL, name) {
        in_scope(stack, &[name], SCOPE)
    } else {
        // Any other end tag: the innermost element of its name, unless a special one comes first.
        in_scope(stack, &[name], SPECIAL)
    };
    if let Some(at) = found {
        truncate(stack, reopen, at);
    }
}

fn open(stack: &mut Vec<Open>, reopen: &mut Vec<Open>, name: String, attributes: String, self_closed: bool) -> Opened {
    if matches!(name.as_str(), "html" | "head" | "body") {
        return Opened::Element;
    }
    let mut foreign = in_foreign(stack);
    if foreign && is(BREAKOUT, &name) {
        if let Some(at) = stack.iter().rposition(|o| o.name == "svg" || o.name == "math") {
            truncate(stack, reopen, at);
        }
        foreign = in_foreign(stack);
    }
    if !foreign && is(RAW_TEXT, &name) && stack.iter().any(|o| o.name == "svg" || o.name == "math") {
        return Opened::TooComplex; // HTML or SVG rules? Not worth following.
    }
    // Blocks and table parts open where they are; other tags first re-open formatting.
    const NO_REOPEN: &[&str] = &[
        "base", "hr", "iframe", "link", "meta", "noembed", "noscript", "param", "script", "source", "style",
        "textarea", "title", "track",
    ];
    if !((is(CLOSES_P, &name) && name != "xmp") || is(TABLE_PARTS, &name) || is(NO_REOPEN, &name)) {
        reopen_formatting(stack, reopen);
    }
    if is(VOID, &name) || (foreign && self_closed) {
        return Opened::Element;
    }
    let name = name.as_str();
    if is(CLOSES_P, name) {
        if let Some(at) = in_scope(stack, &["p"], &[SCOPE, &["button"]].concat()) {
            truncate(stack, reopen, at);
        }
    }
    let replaced: Option<(&[&str], &[&str])> = match name {
        "li" => Some((&["li"], &[])),
        "dd" | "dt" => Some((&["dd", "dt"], &[])),
        "td" | "th" => Some((&["td", "th"], TABLE_SCOPE)),
        "tr" => Some((&["tr"], TABLE_SCOPE)),
        "tbody" | "thead" | "tfoot" => Some((&["tbody", "thead", "tfoot"], TABLE_SCOPE)),
        "button" => Some((&["button"], SCOPE)),
        _ => None,
    };
    if let Some((names, boundaries)) = replaced {
        let found = if boundaries.is_empty() {
            // <li>, <dd>, <dt>: the nearest one, unless a special element other than
            // <address>, <div> or <p> comes first.
            let mut found = None;
            for (at, open) in stack.iter().enumerate().rev() {
                if is(names, &open.name) {
                    found = Some(at);
                    break;
                }
                if is(SPECIAL, &open.name) && !matches!(open.name.as_str(), "address" | "div" | "p") {
                    break;
                }
            }
            found
        } else {
            in_scope(stack, names, boundaries)
        };
        if let Some(at) = found {
            truncate(stack, reopen, at);
        }
    }
    if is(HEADINGS, name) && stack.last().is_some_and(|o| is(HEADINGS, &o.name)) {
        stack.pop();
    }
    if matches!(name, "option" | "optgroup") && stack.last().is_some_and(|o| o.name == "option") {
        stack.pop();
    }
    if name == "optgroup" && stack.last().is_some_and(|o| o.name == "optgroup") {
        stack.pop();
    }
    let key = if is(FORMATTING, name) {
        if matches!(name, "a" | "nobr") {
            // A new <a> first closes an open one (the adoption agency again).
            if let Some(at) = in_scope(stack, &[name], SCOPE) {
                stack.remove(at);
            }
        }
        // At most three alike are re-opened (the parser's "Noah's Ark" clause).
        let key = format!("{name} {}", attributes.trim().trim_end_matches('/'));
        let alike = stack.iter().chain(reopen.iter()).filter(|o| o.key.as_deref() == Some(key.as_str())).count();
        if alike >= 3 {
            if let Some(at) = reopen.iter().position(|o| o.key.as_deref() == Some(key.as_str())) {
                reopen.remove(at);
            } else if let Some(o) = stack.iter_mut().find(|o| o.key.as_deref() == Some(key.as_str())) {
                o.key = None;
            }
        }
        Some(key)
    } else {
        None
    };
    stack.push(Open { name: name.to_owned(), key });
    if name == "plaintext" {
        return Opened::PlainText;
    }
    if !foreign && is(RAW_TEXT, name) {
        return Opened::RawText(name.to_owned());
    }
    Opened::Element
}

/// Where the tag whose name ends at `from` ends (the index of its `>`), and whether it ends in
/// `/>`, following the tokenizer's attribute states: a `>` inside a quoted value does not end it.
fn tag_end(rest: &[u8], from: usize) -> Option<(usize, bool)> {
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
fn raw_text_end(text: &[u8], name: &str) -> Option<usize> {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Trailing spaces off every line, runs of blank lines down to one, no blank edges.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_structure_not_just_tags() {
        let html = "<html><head><style>p{color:red}</style><title>t</title></head><body>\
                    <p>Hello&nbsp;there,</p><ul><li>one</li><li>two</li></ul>\
                    <p>See <a href=\"https://example.com/doc\">the doc</a>.</p>\
                    <blockquote>quoted</blockquote><script>alert(1)</script></body></html>";
        let text = html_to_text(html);
        assert!(text.contains("Hello\u{a0}there,") || text.contains("Hello there,"), "{text}");
        assert!(text.contains("* one\n* two"), "{text}");
        assert!(text.contains("[the doc][1]") && text.contains("[1]: https://example.com/doc"), "{text}");
        assert!(text.contains("> quoted"), "{text}");
        assert!(!text.contains("color:red") && !text.contains("alert"), "{text}");
    }

    #[test]
    fn nesting_estimate() {
        assert_eq!(max_nesting("<p>a<br>b<img src=x></p>"), 1);
        // `<div/>` opens a div; comments hold no tags.
        assert_eq!(max_nesting("<div><div/><!-- <div><div> --><b>x</b></div>"), 3);
        assert_eq!(max_nesting("<div><!-- </div> --!><div>"), 2);
        assert_eq!(max_nesting("<div><!--></div><div>"), 1);
        assert_eq!(max_nesting("a < b and c <= d"), 0);
        assert_eq!(max_nesting(&"<div>".repeat(1000)), MAX_NESTING + 1);
        assert_eq!(max_nesting("<div"), 0);
        assert_eq!(max_nesting(""), 0);
        assert_eq!(max_nesting("<!DOCTYPE html><html><head><title>x</title></head><body><p>x</p></body></html>"), 1);
    }

    /// What real (if sloppy) mail HTML looks like stays well below the limit.
    #[test]
    fn nesting_estimate_follows_implied_end_tags() {
        let flat = |html: &str| {
            let depth = max_nesting(&html.repeat(2000));
            assert!(depth <= 12, "{html}: {depth}");
        };
        flat("<p>para");
        flat("<li>item");
        flat("<dt>term<dd>definition");
        flat("<tr><td>a<td>b");
        flat("<p><b>bold</p>");
        flat("<p><font face=Arial><b>x</p>");
        flat("<div><p>text</div>");
        flat("<span>x</span></p></br>");
        flat("<a href=x>link<a href=y>next");
        flat("<option>a<option>b");
        flat("<svg><g/><path d='M0 0'/></svg>");
        flat("<b>1<div>2</b>3</div>");
        let table = "<table><tr><td><table><tr><td>x</td></tr></table></td></tr></table>";
        assert_eq!(max_nesting(table), 6);
    }

    /// Inputs the parser nests deeply although start and end tags balance (each takes html5ever
    /// time quadratic in its size: minutes for 180 KB of the first one).
    #[test]
    fn nesting_estimate_is_not_fooled() {
        for unit in [
            "<div></x>",                    // an end tag that matches nothing is ignored
            "<div/>",                       // `/>` does not close a div
            "<b><div></b>",                 // the adoption agency keeps the div open
            "<div><script></div></script>", // script text holds no tags
            "<div><textarea></div></textarea>",
            "<div><b title=\"></div>\">", // nor does a quoted attribute
            "<div></ </div>>",            // `</ …>` is a bogus comment
            "<body><div></body>",         // `</body>` closes nothing
            "<div><table><td></div>",     // `</div>` does not reach past the cell
            "<svg><div/>",                // a div ends the svg: it is HTML again
            "<svg><foreignObject><x/>",   // HTML inside foreignObject
            "<b a=1><b a=2><b a=3><b a=4></b></b></b></b><div>x", // re-opened formatting
        ] {
            let html = unit.repeat(1000);
            assert!(max_nesting(&html) > MAX_NESTING, "{unit}: estimated {}", max_nesting(&html));
        }
        // What cannot be followed counts as too deep.
        assert!(max_nesting("<script><!--<script></script>--></script>") > MAX_NESTING);
        assert!(max_nesting("<svg><foreignObject><style><g></style>") > MAX_NESTING);
        assert_eq!(max_nesting("<svg><style><g></g></style></svg>"), 3); // SVG style: tags
    }

    #[test]
    fn quadratic_parser_inputs_are_converted_at_once() {
        for unit in ["<div></x>", "<div/>", "<b><div></b>", "<div><table><td></div>"] {
            let html = format!("{}deep text", unit.repeat(20_000));
            let started = std::time::Instant::now();
            assert_eq!(html_to_text(&html), "deep text", "{unit}");
            assert!(started.elapsed().as_secs() < 5, "{unit}: {:?}", started.elapsed());
        }
    }

    #[test]
    fn the_parsed_depth_is_checked_too() {
        // Deeper than allowed once parsed, whatever the estimate says.
        let html = format!("{}x", "<div>".repeat(MAX_DOM_DEPTH + 10));
        assert!(render(&html).is_none());
        let html = format!("{}x", "<div>".repeat(MAX_NESTING - 10));
        assert_eq!(render(&html).as_deref().map(str::trim), Some("x"));
    }

    #[test]
    fn deep_nesting_uses_the_simple_converter() {
        let html = format!("{}deep text{}", "<table><tr><td>".repeat(5000), "</td></tr></table>".repeat(5000));
        assert_eq!(html_to_text(&html), "deep text");
        let html = format!("{}x{}", "<div><span><b>".repeat(20_000), "</b></span></div>".repeat(20_000));
        assert_eq!(html_to_text(&html), "x");
    }

    #[test]
    fn a_very_wide_table_does_not_blow_up() {
        let html = format!("<table><tr>{}</tr></table>", "<td>x</td>".repeat(5000));
        let text = html_to_text(&html);
        assert!(text.len() <= html.len(), "{} bytes from {}", text.len(), html.len());
        assert_eq!(text.matches('x').count(), 5000);
    }

    #[test]
    fn tidies_blank_lines() {
        assert_eq!(tidy("\n\na  \n\n\n\nb\n\n"), "a\n\nb");
    }
}
