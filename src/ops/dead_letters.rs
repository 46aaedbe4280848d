//! Dead letters: a filtered list, one message in detail, and replay or purge of one, a selection
//! or everything matching the filter — always through a confirmation page that says how many,
//! then a background job ([`super::replay_jobs`]).
//!
//! Reading uses [`dlq::list`] (basic.get without ack; closing the connection puts the messages
//! back), capped at [`SCAN_CAP`], and says so. Matching is [`dlq::Filter`], the CLI's.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use lapin::{Channel, Connection};
use maud::{html, Markup};

use super::auth::Operator;
use super::layout::{self, csrf_field, or_dash, Nav};
use super::replay_jobs::{self, Action, JobRequest};
use super::{payload, thousands, Fields, OpsError, OpsState};
use crate::amqp::dlq::{self, DeadLetter, Filter, Rate, Selection};

/// Most dead letters one page load reads from the queue.
pub(super) const SCAN_CAP: usize = 5_000;
/// Most rows a list shows.
const SHOWN_ROWS: usize = 500;
/// Longest error shown in a list row.
const ERROR_CHARS: usize = 140;

/// A connection and channel on which the topology (so the dead queue) is declared.
pub(super) async fn open(state: &OpsState) -> anyhow::Result<(Connection, Channel)> {
    let connection = crate::amqp::connect(&state.0.amqp_url, "intake-ops").await?;
    let channel = connection.create_channel().await?;
    state.0.topology.declare(&channel).await?;
    Ok((connection, channel))
}

struct Scan {
    /// Ready messages in the dead queue before the scan.
    depth: u32,
    letters: Vec<DeadLetter>,
}

async fn scan(state: &OpsState) -> Result<Scan, OpsError> {
    if let Some(job) = state.0.jobs.running() {
        return Err(OpsError::new(
            StatusCode::CONFLICT,
            format!(
                "A {} job ({}) is running. Dead letters are listed again when it has finished: reading them now \
                 would hide them from it. Its progress: /ops/jobs/{}",
                job.action.as_str(),
                job.what,
                job.id
            ),
        ));
    }
    let (connection, channel) = open(state).await.map_err(OpsError::unavailable)?;
    let queue = state.0.topology.dead_queue.as_str();
    let result = async {
        let depth = dlq::depth(&channel, queue).await?;
        let letters = dlq::list(&channel, queue, SCAN_CAP).await?;
        lapin::Result::Ok(Scan { depth, letters })
    }
    .await;
    // Closing hands every message read back to the queue.
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    result.map_err(|e| OpsError::unavailable(format!("RabbitMQ: {e}")))
}

/// The filter fields of a form or query, kept as typed for re-showing them.
struct FilterForm {
    raw: Vec<(&'static str, String)>,
    filter: Filter,
}

const FILTER_FIELDS: [(&str, &str); 7] = [
    ("reason", "reason"),
    ("adapter", "adapter"),
    ("channel_type", "channel type"),
    ("external_channel_id", "external channel id"),
    ("older_than", "older than"),
    ("newer_than", "newer than"),
    ("text", "text in body or error"),
];

impl FilterForm {
    fn parse(fields: &Fields) -> Result<FilterForm, OpsError> {
        let raw: Vec<(&'static str, String)> =
            FILTER_FIELDS.iter().filter_map(|(name, _)| fields.get(name).map(|v| (*name, v.to_owned()))).collect();
        let get = |name: &str| raw.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let duration = |name: &str| -> Result<_, OpsError> {
            get(name)
                .map(|v| crate::amqp::parse_duration(&v).map_err(|e| OpsError::bad_request(format!("{name}: {e}"))))
                .transpose()
        };
        let filter = Filter {
            reason: get("reason"),
            adapter: get("adapter"),
            channel_type: get("channel_type"),
            external_channel_id: get("external_channel_id"),
            older_than: duration("older_than")?,
            newer_than: duration("newer_than")?,
            text: get("text"),
        };
        Ok(FilterForm { raw, filter })
    }

    fn value(&self, name: &str) -> &str {
        self.raw.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    fn hidden(&self) -> Markup {
        html! { @for (name, value) in &self.raw { input type="hidden" name=(name) value=(value); } }
    }

    fn describe(&self) -> String {
        if self.raw.is_empty() {
            return "all dead letters".into();
        }
        let parts: Vec<String> = self.raw.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("dead letters matching {}", parts.join(", "))
    }

    fn selection(&self) -> Selection {
        if self.filter.is_empty() {
            Selection::All
        } else {
            Selection::Matching(self.filter.clone())
        }
    }
}

fn clip(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(chars).collect::<String>())
    }
}

fn entry_point(d: &DeadLetter) -> String {
    match &d.external_channel_id {
        Some(id) => format!("{} / {id}", d.channel_type()),
        None => d.channel_type().to_owned(),
    }
}

fn detail_href(id: &str) -> String {
    let mut href = String::from("/ops/dead-letters/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            href.push(b as char);
        } else {
            href.push_str(&format!("%{b:02X}"));
        }
    }
    href
}

pub(super) async fn list(
    State(state): State<OpsState>,
    operator: Operator,
    RawQuery(raw): RawQuery,
) -> Result<Response, OpsError> {
    let form = FilterForm::parse(&Fields::query(raw.as_deref())?)?;
    let scan = scan(&state).await?;
    let now = chrono::Utc::now();
    let matched: Vec<&DeadLetter> = scan.letters.iter().filter(|d| form.filter.matches(d, now)).collect();
    let body = html! {
        form.filters method="get" action="/ops/dead-letters" {
            @for (name, label) in FILTER_FIELDS {
                label { (label)
                    input name=(name) value=(form.value(name)) size=(if name == "text" { 24 } else { 14 })
                        placeholder=(match name { "older_than" | "newer_than" => "e.g. 2h, 7d", "channel_type" => "email, chat, webhook", _ => "" });
                }
            }
            button type="submit" { "Filter" }
            a href="/ops/dead-letters" { "Clear" }
        }
        p.summary {
            "The dead queue " code { (state.0.topology.dead_queue) } " holds " strong { (thousands(scan.depth.into())) } ". "
            "Scanned " (thousands(scan.letters.len() as u64))
            @if scan.depth as usize > SCAN_CAP { " (a page scans at most " (thousands(SCAN_CAP as u64)) ")" }
            "; " strong #matched { (thousands(matched.len() as u64)) } " match"
            @if matched.len() > SHOWN_ROWS { ", showing the first " (SHOWN_ROWS) }
            "."
        }
        form method="post" action="/ops/dead-letters/confirm" {
            (csrf_field(&operator))
            (form.hidden())
            div.actions {
                button type="submit" name="do" value="replay-selected" { "Replay selected" }
                button.secondary type="submit" name="do" value="purge-selected" { "Purge selected" }
                span.muted { "or everything matching the filter:" }
                button type="submit" name="do" value="replay-matching" { "Replay all matching" }
                button.secondary type="submit" name="do" value="purge-matching" { "Purge all matching" }
            }
            table #dead-letters {
                thead { tr {
                    th { "" } th { "id" } th { "reason" } th { "adapter" } th { "entry point" }
                    th.num { "attempts" } th.num { "age" } th { "error" }
                } }
                tbody {
                    @for d in matched.iter().take(SHOWN_ROWS) {
                        tr {
                            td { input type="checkbox" name="id" value=(d.id) aria-label={ "select " (d.id) }; }
                            td.mono { a href=(detail_href(&d.id)) { (d.id) } }
                            td { span.pill.bad { (d.reason) } }
                            td { (d.adapter) }
                            td { (entry_point(d)) }
                            td.num { (d.attempts) }
                            td.num { (d.age(now)) }
                            td.clip title=(clip(&d.error, 1000)) { (clip(&d.error, ERROR_CHARS)) }
                        }
                    }
                    @if matched.is_empty() { tr { td.muted colspan="8" { "No dead letters match." } } }
                }
            }
        }
        (replay_jobs::recent_table(&state))
    };
    Ok(super::html(StatusCode::OK, layout::page("Dead letters", &operator, Nav::DeadLetters, body)))
}

pub(super) async fn detail(
    State(state): State<OpsState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, OpsError> {
    let scan = scan(&state).await?;
    let Some(d) = scan.letters.iter().find(|d| d.id == id) else {
        return Err(OpsError::not_found(format!(
            "No dead letter `{id}` among the first {} in the dead queue (it may have been replayed or purged).",
            thousands(scan.letters.len() as u64)
        )));
    };
    let shown = payload::show(&d.body, d.content_type.as_deref());
    let headers = crate::amqp::properties::header_lines(d.properties().headers().as_ref());
    let now = chrono::Utc::now();
    let body = html! {
        form.actions method="post" action="/ops/dead-letters/confirm" {
            (csrf_field(&operator))
            input type="hidden" name="id" value=(d.id);
            button type="submit" name="do" value="replay-selected" { "Replay" }
            button.secondary type="submit" name="do" value="purge-selected" { "Purge" }
            a href="/ops/dead-letters" { "Back to the list" }
        }
        dl.props {
            dt { "reason" } dd { span.pill.bad #reason { (d.reason) } }
            dt { "error" } dd #error { (d.error) }
            dt { "adapter" } dd { (d.adapter) }
            dt { "entry point" } dd { (entry_point(d)) }
            dt { "routing key" } dd.mono { (d.routing_key) }
            dt { "exchange" } dd.mono { (d.exchange) }
            dt { "attempts" } dd { (d.attempts) }
            dt { "first seen" } dd { (or_dash(d.first_seen.map(layout::time))) }
            dt { "dead-lettered" } dd { (or_dash(d.dead_at.map(layout::time))) " (" (d.age(now)) " ago)" }
            dt { "size" } dd { (thousands(d.size as u64)) " bytes" }
        }
        h2 { "Properties" }
        dl.props {
            @for (name, value) in crate::amqp::properties::property_lines(d.properties()) {
                dt.mono { (name) } dd.mono { (value) }
            }
        }
        h2 { "Headers" }
        table #headers {
            thead { tr { th { "name" } th { "value" } } }
            tbody {
                @for (name, value) in &headers { tr { td.mono { (name) } td.mono { (value) } } }
                @if headers.is_empty() { tr { td.muted colspan="2" { "none" } } }
            }
        }
        h2 { "Payload" }
        p.muted {
            (or_dash(d.content_type.as_deref())) ", " (thousands(d.size as u64)) " bytes"
            @if shown.kind == "json" { ", pretty-printed JSON" } @else { ", shown as text" }
            @if shown.truncated { strong.warn { " — truncated: the first " (thousands(payload::SHOWN_BYTES as u64)) " bytes are shown" } }
            "."
        }
        pre.payload #payload { (shown.text) }
    };
    Ok(super::html(StatusCode::OK, layout::page(&format!("Dead letter {}", d.id), &operator, Nav::DeadLetters, body)))
}

/// What a confirm or run form asks for.
struct Request {
    action: Action,
    /// `selected` (the ids) or `matching` (the filter).
    ids: Option<Vec<String>>,
    form: FilterForm,
}

impl Request {
    fn parse(fields: &Fields) -> Result<Request, OpsError> {
        let (action, scope) = match fields.get("do") {
            Some(d) => d.split_once('-').ok_or_else(|| OpsError::bad_request("unknown action"))?,
            None => (fields.get("action").unwrap_or_default(), fields.get("scope").unwrap_or_default()),
        };
        let action = Action::parse(Some(action))?;
        let ids = match scope {
            "selected" => {
                let ids: Vec<String> = fields.all("id").into_iter().map(str::to_owned).collect();
                if ids.is_empty() {
                    return Err(OpsError::bad_request(
                        "Select at least one dead letter (the checkboxes), or act on all matching.",
                    ));
                }
                Some(ids)
            }
            "matching" => None,
            _ => return Err(OpsError::bad_request("scope must be selected or matching")),
        };
        Ok(Request { action, ids, form: FilterForm::parse(fields)? })
    }

    fn selection(&self) -> Selection {
        match &self.ids {
            Some(ids) => Selection::Ids(ids.clone()),
            None => self.form.selection(),
        }
    }

    fn describe(&self) -> String {
        match &self.ids {
            Some(ids) if ids.len() == 1 => format!("dead letter {}", ids[0]),
            Some(ids) => format!("{} selected dead letters", ids.len()),
            None => self.form.describe(),
        }
    }

    fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="action" value=(self.action.as_str());
            @match &self.ids {
                Some(ids) => {
                    input type="hidden" name="scope" value="selected";
                    @for id in ids { input type="hidden" name="id" value=(id); }
                },
                None => {
                    input type="hidden" name="scope" value="matching";
                    (self.form.hidden())
                },
            }
        }
    }
}

pub(super) async fn confirm(
    State(state): State<OpsState>,
    operator: Operator,
    body: Bytes,
) -> Result<Response, OpsError> {
    let fields = Fields::form(&body)?;
    operator.check_csrf(&fields)?;
    let request = Request::parse(&fields)?;
    let scan = scan(&state).await?;
    let now = chrono::Utc::now();
    let selection = request.selection();
    let matched: Vec<&DeadLetter> = scan.letters.iter().filter(|d| selection.matches(d, now)).collect();
    let count = matched.len() as u64;
    let partial = request.ids.is_none() && scan.depth as usize > scan.letters.len();
    let verb = request.action.verb();
    let title = format!("{verb} {} dead letter{}?", thousands(count), if count == 1 { "" } else { "s" });
    let body = html! {
        p.summary #confirm-count {
            strong { (thousands(count)) } " dead letter" @if count != 1 { "s" } " to " (request.action.as_str()) ": " (request.describe()) "."
            @if partial {
                " That count is from the first " (thousands(scan.letters.len() as u64)) " of the "
                (thousands(scan.depth.into())) " in the dead queue; the job goes through all of them, so it may find more."
            }
        }
        @match request.action {
            Action::Replay => p.explain { "Each one is published back to its original exchange and routing key (with a publisher confirm), then removed from the dead queue. Messages already applied are recognised by their idempotency key and change nothing." },
            Action::Purge => p.explain.warn { "Purged dead letters are deleted for good." },
        }
        @if count > 0 {
            table {
                thead { tr { th { "id" } th { "reason" } th { "adapter" } th { "error" } } }
                tbody {
                    @for d in matched.iter().take(20) {
                        tr { td.mono { (d.id) } td { (d.reason) } td { (d.adapter) } td.clip { (clip(&d.error, ERROR_CHARS)) } }
                    }
                    @if matched.len() > 20 { tr { td.muted colspan="4" { "… and " (thousands(count - 20)) " more" } } }
                }
            }
            form method="post" action="/ops/dead-letters/run" {
                (csrf_field(&operator))
                (request.hidden())
                input type="hidden" name="expected" value=(count);
                div.actions {
                    @if request.action == Action::Replay {
                        label { "Rate limit (messages per second, 0 = none) "
                            input #rate name="rate" type="number" min="0" step="any" value=(dlq::DEFAULT_REPLAY_RATE.0) size="6";
                        }
                    }
                    button.danger[request.action == Action::Purge] #run type="submit" { (verb) " " (thousands(count)) }
                    a href="/ops/dead-letters" { "Cancel" }
                }
            }
        } @else {
            p { "Nothing to do. " a href="/ops/dead-letters" { "Back to the list" } }
        }
    };
    Ok(super::html(StatusCode::OK, layout::page(&title, &operator, Nav::DeadLetters, body)))
}

pub(super) async fn run(State(state): State<OpsState>, operator: Operator, body: Bytes) -> Result<Response, OpsError> {
    let fields = Fields::form(&body)?;
    operator.check_csrf(&fields)?;
    let request = Request::parse(&fields)?;
    let rate = match request.action {
        Action::Replay => Some(match fields.get("rate") {
            Some(raw) => raw.parse::<Rate>().map_err(|e| OpsError::bad_request(format!("rate: {e}")))?,
            None => dlq::DEFAULT_REPLAY_RATE,
        }),
        Action::Purge => None,
    };
    let expected = fields.get("expected").and_then(|e| e.parse().ok()).unwrap_or(0);
    let job = replay_jobs::start(
        &state,
        &operator,
        JobRequest { action: request.action, selection: request.selection(), what: request.describe(), expected, rate },
    );
    Ok(Redirect::to(&format!("/ops/jobs/{}", job.id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_buttons_and_hidden_fields() {
        let r = Request::parse(&Fields::parse(b"do=replay-selected&id=a&id=b&reason=x").unwrap()).unwrap();
        assert_eq!(r.action, Action::Replay);
        assert_eq!(r.ids.as_deref(), Some(&["a".to_owned(), "b".to_owned()][..]));
        assert_eq!(r.describe(), "2 selected dead letters");
        let r = Request::parse(&Fields::parse(b"action=purge&scope=matching&reason=x&older_than=2h").unwrap()).unwrap();
        assert_eq!(r.action, Action::Purge);
        assert_eq!(r.form.filter.older_than, Some(std::time::Duration::from_secs(7200)));
        assert_eq!(r.describe(), "dead letters matching reason=x, older_than=2h");
        assert!(Request::parse(&Fields::parse(b"do=replay-selected").unwrap()).is_err());
        assert!(Request::parse(&Fields::parse(b"do=explode-matching").unwrap()).is_err());
        assert!(Request::parse(&Fields::parse(b"do=purge-matching&older_than=soon").unwrap()).is_err());
        let all = Request::parse(&Fields::parse(b"do=purge-matching").unwrap()).unwrap();
        assert!(matches!(all.selection(), Selection::All));
    }

    #[test]
    fn links_encode_ids() {
        assert_eq!(detail_href("a b/c"), "/ops/dead-letters/a%20b%2Fc");
    }
}
