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

/// The text of an HTML body.
pub fn html_to_text(html: &str) -> String {
    if html.len() <= MAX_HTML_BYTES && max_nesting(html) <= MAX_NESTING {
        if let Ok(text) = html2text::config::plain().string_from_read(html.as_bytes(), WIDTH) {
            if text.len() <= 2 * html.len() + 4096 {
                return tidy(&text);
            }
        }
    }
    tidy(&mail_parser::decoders::html::html_to_text(html))
}

/// An upper bound of how deep elements nest: start tags of elements that have content count
/// up, end tags count down. Void elements (`<br>`, `<img>`, …) and self-closed tags do not
/// nest; comments and `<!…>` declarations are skipped. Unclosed `<p>`/`<li>`/`<td>` make this
/// an over-estimate, which only sends odd HTML to the simple converter.
pub fn max_nesting(html: &str) -> usize {
    const VOID: &[&str] =
        &["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"];
    let bytes = html.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'<') {
        i += offset + 1;
        let rest = &bytes[i..];
        if rest.starts_with(b"!--") {
            match find(rest, b"-->") {
                Some(end) => i += end + 3,
                None => break,
            }
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = usize::from(closing);
        let name_len = rest[name_start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
        if name_len == 0 {
            continue;
        }
        let name = &rest[name_start..name_start + name_len];
        let Some(end) = rest.iter().position(|&b| b == b'>') else {
            // An unterminated tag at the end still opens an element.
            if !closing {
                max = max.max(depth + 1);
            }
            break;
        };
        let self_closed = end > 0 && rest.get(end - 1) == Some(&b'/');
        if closing {
            depth = depth.saturating_sub(1);
        } else if !self_closed && !VOID.iter().any(|v| v.as_bytes().eq_ignore_ascii_case(name)) {
            depth += 1;
            max = max.max(depth);
        }
        i += end;
    }
    max
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
        assert_eq!(max_nesting("<div><div/><!-- <div><div> --><b>x</b></div>"), 2);
        assert_eq!(max_nesting("a < b and c <= d"), 0);
        assert_eq!(max_nesting(&"<div>".repeat(1000)), 1000);
        assert_eq!(max_nesting("<div"), 1);
        assert_eq!(max_nesting(""), 0);
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
