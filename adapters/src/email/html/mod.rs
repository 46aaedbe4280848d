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

mod elements;
mod nesting;
#[cfg(test)]
mod tests;
mod tokenizer;
mod tree_builder;

pub use nesting::{max_nesting, MAX_NESTING};

/// Larger HTML bodies are converted by the simple tag stripper.
pub const MAX_HTML_BYTES: usize = 1024 * 1024;
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
