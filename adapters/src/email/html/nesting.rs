//! How deep an HTML document nests, estimated without parsing it.

use super::tokenizer::{find, raw_text_end, starts_alpha, starts_with_ignore_case, tag_end};
use super::tree_builder::{close, in_foreign, open, reopen_formatting, Open, Opened};

/// HTML whose open elements nest deeper than this is converted by the simple tag stripper.
pub const MAX_NESTING: usize = 256;

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
/// deep. Whatever the estimate, [`html_to_text`](super::html_to_text) checks the depth of the
/// parsed document again before laying it out.
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
