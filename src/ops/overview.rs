//! The overview: [`crate::health::Overview`] as tables, each with a line saying what its
//! numbers mean. Values the sampler could not read show as `—`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::auth::Operator;
use super::layout::{self, or_dash, Nav};
use super::{human_secs, query_string, thousands, OpsState};
use crate::health::{Overview, QueueStats};

pub(super) async fn page(State(state): State<OpsState>, operator: Operator) -> Response {
    let overview = state.0.sampler.sample().await;
    super::html(StatusCode::OK, layout::page("Overview", &operator, Nav::Overview, render(&overview)))
}

fn rate(r: Option<f64>) -> String {
    or_dash(r.map(|r| format!("{r:.1}/s")))
}

fn queue_table(queues: &[QueueStats]) -> Markup {
    html! {
        table {
            thead { tr {
                th { "queue" } th.num { "ready" } th.num { "unacked" } th.num { "consumers" }
                th.num { "in" } th.num { "out" } th.num { "oldest" }
            } }
            tbody {
                @for q in queues {
                    tr {
                        td.mono { (q.name) }
                        td.num { (thousands(q.ready)) }
                        td.num { (or_dash(q.unacked.map(thousands))) }
                        td.num { (q.consumers) }
                        td.num { (rate(q.publish_rate)) }
                        td.num { (rate(q.deliver_rate)) }
                        td.num { (or_dash(q.oldest_age_secs.map(human_secs))) }
                    }
                }
                @if queues.is_empty() { tr { td.muted colspan="7" { "—" } } }
            }
        }
    }
}

fn render(o: &Overview) -> Markup {
    html! {
        p.muted { "Sampled " (or_dash(o.sampled_at.map(layout::time))) ". Reload the page for fresh numbers." }
        @if !o.warnings.is_empty() {
            div.warnings {
                strong { "Not everything could be sampled:" }
                ul { @for w in &o.warnings { li { (w) } } }
            }
        }

        h2 { "Queues" }
        p.explain { "The channel queues the workers consume and the outbound email queue." }
        dl.legend {
            dt { "ready" } dd { "messages waiting to be delivered to a worker (the backlog)" }
            dt { "unacked" } dd { "delivered to a worker and not yet acknowledged (being applied); needs the management API" }
            dt { "consumers" } dd { "worker connections consuming the queue; 0 means nothing is applying it" }
            dt { "in / out" } dd { "messages per second published into / delivered out of the queue" }
            dt { "oldest" } dd { "age of the oldest ready message: how far behind the workers are" }
        }
        (queue_table(&o.queues))

        h2 { "Retry queues" }
        p.explain { "Messages waiting out a backoff delay before they go back to their queue; a growing number means a failure that may pass (SMTP down, a reply being sent elsewhere) keeps happening." }
        (queue_table(&o.retry_queues))

        h2 { "Dead letters" }
        p.explain {
            "Messages that failed for good, by reason and adapter. "
            @if let Some(dead) = &o.dead_queue {
                "The dead queue " code { (dead.name) } " holds " strong { (thousands(dead.ready)) } ". "
            }
            "The counts below come from a scan of " (thousands(o.dead_scanned)) " dead letters. "
            a href="/ops/dead-letters" { "Inspect, replay or purge" } "."
        }
        table {
            thead { tr { th { "reason" } th { "adapter" } th.num { "count" } } }
            tbody {
                @for d in &o.dead_letters {
                    tr {
                        td { a href=(format!("/ops/dead-letters?{}", query_string(&[("reason", d.reason.as_str()), ("adapter", d.adapter.as_str())]))) { (d.reason) } }
                        td { (d.adapter) }
                        td.num { (thousands(d.count)) }
                    }
                }
                @if o.dead_letters.is_empty() { tr { td.muted colspan="3" { "none" } } }
            }
        }

        h2 { "Parked updates" }
        p.explain {
            "Edits, deletes and delivery statuses waiting for a message that has not arrived yet: "
            strong { (o.parked) }
            ". They apply when it does, or expire after INTAKE_PARKED_MAX_AGE."
        }

        h2 { "Last ingest per entry point" }
        p.explain { "When each entry point last had a message stored; an entry point that normally gets traffic and has gone quiet points at its integration." }
        table {
            thead { tr { th { "project" } th { "channel" } th { "external id" } th { "last ingest" } } }
            tbody {
                @for e in &o.last_ingest {
                    tr {
                        td { (e.project_id) }
                        td { (e.channel_type) }
                        td.mono { (e.external_channel_id) }
                        td { (or_dash(e.last_ingest_at.map(layout::time))) }
                    }
                }
                @if o.last_ingest.is_empty() { tr { td.muted colspan="4" { "—" } } }
            }
        }

        h2 { "Worker instances" }
        p.explain { "Worker processes by their heartbeat, with their batch figures since they started: messages applied, dead-lettered, and the average batch size and time per batch (a batch is one transaction)." }
        table {
            thead { tr {
                th { "instance" } th { "host / pid" } th { "started" } th { "last seen" }
                th.num { "batches" } th.num { "messages" } th.num { "dead-lettered" }
                th.num { "avg batch" } th.num { "avg ms" }
            } }
            tbody {
                @for w in &o.workers {
                    tr {
                        td.mono { (w.instance) }
                        td { (w.host) " / " (w.pid) }
                        td { (layout::time(w.started_at)) }
                        td { (layout::time(w.last_seen_at)) }
                        td.num { (thousands(w.batches.max(0) as u64)) }
                        td.num { (thousands(w.messages.max(0) as u64)) }
                        td.num { (thousands(w.dead_lettered.max(0) as u64)) }
                        td.num { (format!("{:.1}", w.avg_batch_size)) }
                        td.num { (format!("{:.1}", w.avg_batch_ms)) }
                    }
                }
                @if o.workers.is_empty() { tr { td.muted colspan="9" { "—" } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::DeadLetterCount;

    #[test]
    fn unknown_values_show_a_dash_and_text_is_escaped() {
        let o = Overview {
            queues: vec![QueueStats { name: "intake.webhook".into(), ready: 1200, ..Default::default() }],
            dead_letters: vec![DeadLetterCount { reason: "<b>x</b>".into(), adapter: "webhook".into(), count: 3 }],
            warnings: vec!["management API <unreachable>".into()],
            ..Default::default()
        };
        let page = render(&o).into_string();
        assert!(page.contains("1,200"));
        assert!(page.contains("<td class=\"num\">—</td>"), "{page}");
        assert!(page.contains("&lt;b&gt;x&lt;/b&gt;") && !page.contains("<b>x"));
        assert!(page.contains("management API &lt;unreachable&gt;"));
    }
}
