//! Conversations: search a project's conversations and read one's timeline, page by page,
//! through the API's own read code ([`crate::read`]).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use uuid::Uuid;

use super::auth::Operator;
use super::layout::{self, or_dash, Nav};
use super::{query_string, Fields, OpsError, OpsState};
use crate::read::{self, ConversationFilter, Cursor, MessagePage};

const PAGE: usize = 50;
/// Longest message body a timeline shows; the API has it whole.
const BODY_CHARS: usize = 8_000;

/// Projects by id (the console is not scoped to one, unlike an API token).
async fn projects(pool: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM projects ORDER BY id").fetch_all(pool).await
}

/// Project ids are `[A-Za-z0-9_.-]` (a CHECK constraint), safe in a path as they are.
fn conversation_href(project: &str, id: Uuid) -> String {
    format!("/ops/conversations/{project}/{id}")
}

pub(super) async fn list(
    State(state): State<OpsState>,
    operator: Operator,
    RawQuery(raw): RawQuery,
) -> Result<Response, OpsError> {
    let q = Fields::query(raw.as_deref())?;
    let projects = projects(&state.0.pool).await?;
    // One project needs no choosing.
    let project = q.get("project").map(str::to_owned).or_else(|| (projects.len() == 1).then(|| projects[0].clone()));
    let status = q.get("status").map(str::to_owned);
    if let Some(s) = &status {
        if !["open", "pending", "closed"].contains(&s.as_str()) {
            return Err(OpsError::bad_request("status must be open, pending or closed"));
        }
    }
    let query = q.get("query").map(str::to_owned);
    let after = match q.get("cursor") {
        Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| OpsError::bad_request("cursor: not one this page made"))?),
        None => None,
    };
    let filter = ConversationFilter { status: status.clone(), query: query.clone(), ..Default::default() };
    let list = match &project {
        Some(p) => Some(read::list_conversations(&state.0.pool, p, &filter, after.as_ref(), 0, PAGE).await?),
        None => None,
    };
    let body = html! {
        form.filters method="get" action="/ops/conversations" {
            label { "project"
                select name="project" {
                    @if project.is_none() { option value="" { "— choose —" } }
                    @for p in &projects { option value=(p) selected[project.as_deref() == Some(p.as_str())] { (p) } }
                }
            }
            label { "search (subject, preview, customer name or email)"
                input name="query" value=(query.as_deref().unwrap_or_default()) size="32";
            }
            label { "status"
                select name="status" {
                    option value="" { "any" }
                    @for s in ["open", "pending", "closed"] { option value=(s) selected[status.as_deref() == Some(s)] { (s) } }
                }
            }
            button type="submit" { "Search" }
        }
        @match (&project, &list) {
            (Some(project), Some(list)) => {
                (conversation_table(project, list))
                div.pager {
                    @if after.is_some() {
                        a href=(format!("/ops/conversations?{}", query_string(&[("project", project), ("query", query.as_deref().unwrap_or_default()), ("status", status.as_deref().unwrap_or_default())]))) { "First page" }
                    }
                    @if let Some(next) = &list.next_cursor {
                        a href=(format!("/ops/conversations?{}", query_string(&[("project", project), ("query", query.as_deref().unwrap_or_default()), ("status", status.as_deref().unwrap_or_default()), ("cursor", next)]))) { "Next page →" }
                    }
                }
            },
            _ => { p.muted { "Choose a project." } },
        }
    };
    Ok(super::html(StatusCode::OK, layout::page("Conversations", &operator, Nav::Conversations, body)))
}

fn conversation_table(project: &str, list: &read::ConversationList) -> Markup {
    html! {
        table #conversations {
            thead { tr { th { "subject" } th { "status" } th { "customer" } th { "preview" } th { "last activity" } th { "source" } } }
            tbody {
                @for c in &list.conversations {
                    tr {
                        td { a href=(conversation_href(project, c.conversation_id)) { (c.subject.as_deref().unwrap_or("(no subject)")) } }
                        td { span.pill { (c.status) } }
                        td { (or_dash(c.user_display_name.as_deref().or(c.user_primary_email.as_deref()))) }
                        td.clip { (c.preview.as_deref().unwrap_or_default()) }
                        td { (layout::time(c.last_activity_at)) }
                        td { (c.source) }
                    }
                }
                @if list.conversations.is_empty() { tr { td.muted colspan="6" { "No conversations match." } } }
            }
        }
    }
}

pub(super) async fn detail(
    State(state): State<OpsState>,
    operator: Operator,
    Path((project, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, OpsError> {
    let id = Uuid::parse_str(&id).map_err(|_| OpsError::not_found("no such conversation"))?;
    let q = Fields::query(raw.as_deref())?;
    let before = match q.get("before") {
        Some(raw) => {
            Some(Cursor::decode(raw).ok_or_else(|| OpsError::bad_request("before: not a cursor this page made"))?)
        }
        None => None,
    };
    let paged = before.is_some();
    let page = MessagePage { before, limit: Some(PAGE) };
    let bundle = read::conversation_page(&state.0.pool, &project, id, &page)
        .await?
        .ok_or_else(|| OpsError::not_found(format!("no conversation {id} in project `{project}`")))?;
    let c = &bundle.conversation;
    let here = conversation_href(&project, id);
    let body = html! {
        dl.props {
            dt { "project" } dd { a href=(format!("/ops/conversations?{}", query_string(&[("project", &project)]))) { (project) } }
            dt { "id" } dd.mono { (c.conversation_id) }
            dt { "status" } dd { span.pill { (c.status) } " · priority " (c.priority) " · source " (c.source) }
            dt { "customer" } dd { (or_dash(c.user_display_name.as_deref())) " " (c.user_primary_email.as_deref().map(|e| format!("<{e}>")).unwrap_or_default()) }
            dt { "assigned to" } dd { (or_dash(c.metadata.assigned_to_display_name.as_deref().or(c.metadata.assigned_to_user_id.as_deref()))) }
            dt { "tags" } dd { @if c.metadata.tags.is_empty() { "—" } @for t in &c.metadata.tags { span.pill { (t) } " " } }
            dt { "entry points" } dd { @for e in &bundle.entry_points { span.pill { (e.channel_type) " / " (e.external_channel_id) } " " } }
            dt { "created" } dd { (layout::time(c.created_at)) }
            dt { "last activity" } dd { (layout::time(c.last_activity_at)) }
            dt { "closed" } dd { (or_dash(c.closed_at.map(layout::time))) }
        }
        h2 { "Timeline" }
        p.muted {
            @if paged { "Older messages, oldest first. " a href=(here) { "Newest" } }
            @else { "The newest " (PAGE) " messages, oldest first." }
        }
        @if let Some(next) = &bundle.next_cursor {
            div.pager { a href=(format!("{here}?{}", query_string(&[("before", next)]))) { "← Older messages" } }
        }
        div.messages #timeline {
            @for m in &bundle.messages {
                div class={ "msg " (m.sender.sender_type) } {
                    div.meta {
                        (layout::time(m.created_at)) " · " (m.sender.sender_type) " "
                        strong { (or_dash(m.sender.display_name.as_deref().or(m.sender.primary_email.as_deref()).or(m.sender.id.as_deref()))) }
                        " · " (m.message_type)
                        @if let Some(n) = m.attachments.as_array().map(Vec::len).filter(|n| *n > 0) { " · " (n) " attachment(s)" }
                        " · " span.mono { (m.id) }
                    }
                    @if let Some(subject) = &m.subject { div { strong { (subject) } } }
                    div.body {
                        @if m.body.chars().count() > BODY_CHARS {
                            (m.body.chars().take(BODY_CHARS).collect::<String>()) span.muted { " … (cut; the API has the whole body)" }
                        } @else {
                            (m.body)
                        }
                    }
                }
            }
            @if bundle.messages.is_empty() { p.muted { "No messages." } }
        }
    };
    let title = format!("Conversation: {}", c.subject.as_deref().unwrap_or("(no subject)"));
    Ok(super::html(StatusCode::OK, layout::page(&title, &operator, Nav::Conversations, body)))
}
