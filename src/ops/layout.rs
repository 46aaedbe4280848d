//! The page frame (head, navigation, sign-out form) and the stylesheet, served from
//! `/ops/style.css` so the pages need no other origin.

use axum::http::header;
use axum::response::IntoResponse;
use maud::{html, Markup, DOCTYPE};

use super::auth::Operator;

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    DeadLetters,
    Conversations,
}

fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(secs) = refresh {
                meta http-equiv="refresh" content=(secs);
            }
            title { (title) " · intake ops" }
            link rel="stylesheet" href="/ops/style.css";
        }
    }
}

/// A page of a signed-in operator.
pub(crate) fn page(title: &str, operator: &Operator, nav: Nav, body: Markup) -> Markup {
    page_with_refresh(title, operator, nav, None, body)
}

/// A page that reloads itself every `refresh` seconds (the job progress page).
pub(crate) fn page_with_refresh(
    title: &str,
    operator: &Operator,
    nav: Nav,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    let entry = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(target == nav).then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, refresh))
            body {
                header.top {
                    span.brand { "intake ops" }
                    nav {
                        (entry(Nav::Overview, "/ops", "Overview"))
                        (entry(Nav::DeadLetters, "/ops/dead-letters", "Dead letters"))
                        (entry(Nav::Conversations, "/ops/conversations", "Conversations"))
                    }
                    form.sign-out method="post" action="/ops/sign-out" {
                        span.muted { "signed in as " strong { (operator.name) } }
                        (csrf_field(operator))
                        button.link type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body.bare { main { (body) } }
        }
    }
}

pub(crate) fn error_page(title: &str, message: &str) -> Markup {
    bare_page(
        title,
        html! {
            div.card {
                h1 { (title) }
                p.error { (message) }
                p { a href="/ops" { "Back to the console" } }
            }
        },
    )
}

/// The hidden field every state-changing form carries.
pub(crate) fn csrf_field(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf); }
}

/// `—` for a value that is not known.
pub(crate) fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "—".into())
}

/// A time as `2026-12-03 04:05:06 UTC`.
pub(crate) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE)
}

const STYLE: &str = r#"
:root { --fg:#1d2330; --muted:#5d6677; --line:#dde2ea; --bg:#f6f7f9; --card:#fff; --accent:#2450b8;
        --bad:#b3261e; --good:#1e7b34; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size:12.5px; }
header.top { display:flex; align-items:center; gap:24px; padding:10px 24px; background:#1d2330; color:#fff; }
header.top .brand { font-weight:700; letter-spacing:.02em; }
header.top nav { display:flex; gap:4px; flex:1; }
header.top nav a { color:#c9d3e6; padding:6px 10px; border-radius:6px; }
header.top nav a[aria-current=page] { background:#33405a; color:#fff; }
header.top .muted { color:#aab4c6; } header.top strong { color:#fff; }
form.sign-out { display:flex; gap:10px; align-items:center; margin:0; }
main { padding:20px 24px 48px; max-width:1280px; }
body.bare main { max-width:440px; margin:10vh auto; }
h1 { font-size:22px; margin:0 0 14px; } h2 { font-size:16px; margin:26px 0 6px; }
.muted, .explain { color:var(--muted); } .explain { margin:0 0 8px; max-width:900px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px; }
.sign-in label { display:block; margin:14px 0 4px; font-weight:600; }
.sign-in input { width:100%; }
.sign-in button { margin-top:14px; width:100%; }
.error { color:var(--bad); font-weight:600; } .good { color:var(--good); } .warn { color:var(--warn); }
.warnings { background:#fff7e6; border:1px solid #f0d9a8; border-radius:8px; padding:8px 14px; }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line); border-radius:8px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); background:#fafbfc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.clip { max-width:420px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
tr:last-child td { border-bottom:none; }
dl.props { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dl.props dt { color:var(--muted); } dl.props dd { margin:0; word-break:break-all; }
dl.legend { display:grid; grid-template-columns:max-content 1fr; gap:2px 14px; margin:6px 0 10px; color:var(--muted); font-size:13px; }
dl.legend dt { font-weight:600; color:var(--fg); } dl.legend dd { margin:0; }
form.filters { display:flex; flex-wrap:wrap; gap:10px; align-items:flex-end; background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px; margin-bottom:12px; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); gap:2px; }
input, select { font:inherit; padding:6px 8px; border:1px solid #c4cbd7; border-radius:6px; background:#fff; }
button { font:inherit; padding:6px 14px; border-radius:6px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; }
button.secondary { background:#fff; color:var(--accent); }
button.danger { background:var(--bad); border-color:var(--bad); }
button.link { background:none; border:none; color:#c9d3e6; padding:0; text-decoration:underline; }
.actions { display:flex; flex-wrap:wrap; gap:8px; margin:10px 0; align-items:center; }
.pill { display:inline-block; padding:1px 8px; border-radius:999px; background:#eef1f6; font-size:12px; }
.pill.bad { background:#fde8e6; color:var(--bad); }
pre.payload { background:#0f1420; color:#e6e9ef; padding:14px; border-radius:8px; overflow:auto; max-height:560px; white-space:pre-wrap; word-break:break-word; }
.summary { margin:6px 0 12px; }
progress { width:100%; height:18px; }
.messages .msg { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 14px; margin:8px 0; }
.messages .msg.agent { border-left:4px solid var(--accent); } .messages .msg.user { border-left:4px solid var(--good); }
.messages .msg.system { border-left:4px solid #999; }
.messages .meta { color:var(--muted); font-size:12px; margin-bottom:4px; }
.messages .body { white-space:pre-wrap; word-break:break-word; }
.pager { display:flex; gap:16px; margin:12px 0; }
"#;
