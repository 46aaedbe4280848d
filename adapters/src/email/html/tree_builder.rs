//! The tree builder's rules that decide depth, on the estimate's own stack of open elements:
//! which elements a start or end tag opens, closes or re-opens.

use super::elements::{
    is, BREAKOUT, CLOSES_P, FORMATTING, HEADINGS, INTEGRATION_POINTS, RAW_TEXT, SCOPE, SPECIAL, TABLE_PARTS,
    TABLE_SCOPE, VOID,
};

/// An element on the estimate's stack; `key` (name and attributes) for formatting elements.
#[derive(Clone)]
pub(super) struct Open {
    name: String,
    key: Option<String>,
}

/// What a start tag leaves the scan to do: go on, skip raw text, stop, or give up.
pub(super) enum Opened {
    Element,
    RawText(String),
    PlainText,
    TooComplex,
}

/// Whether the innermost `<svg>`/`<math>` or integration point open is `<svg>`/`<math>`.
pub(super) fn in_foreign(stack: &[Open]) -> bool {
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

pub(super) fn reopen_formatting(stack: &mut Vec<Open>, reopen: &mut Vec<Open>) {
    stack.append(reopen);
}

pub(super) fn close(stack: &mut Vec<Open>, reopen: &mut Vec<Open>, name: &str) {
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

pub(super) fn open(
    stack: &mut Vec<Open>,
    reopen: &mut Vec<Open>,
    name: String,
    attributes: String,
    self_closed: bool,
) -> Opened {
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
