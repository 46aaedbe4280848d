//! Unit tests of the conversion and of the nesting estimate against hostile inputs.

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
        "<div><b title=\"></div>\">",                         // nor does a quoted attribute
        "<div></ </div>>",                                    // `</ …>` is a bogus comment
        "<body><div></body>",                                 // `</body>` closes nothing
        "<div><table><td></div>",                             // `</div>` does not reach past the cell
        "<svg><div/>",                                        // a div ends the svg: it is HTML again
        "<svg><foreignObject><x/>",                           // HTML inside foreignObject
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
