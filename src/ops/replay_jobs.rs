//! Replays and purges run as background jobs (a request would time out on a big backlog), each
//! with a progress page that reloads itself. Jobs live in this process's memory; the last few
//! are kept for their progress pages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

use super::auth::Operator;
use super::layout::{self, Nav};
use super::{human_secs, thousands, OpsError, OpsState};
use crate::amqp::dlq::{self, Rate, Selection, Step};
use crate::amqp::publish::ConfirmedPublisher;

const KEEP: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Replay,
    Purge,
}

impl Action {
    pub(super) fn parse(s: Option<&str>) -> Result<Action, OpsError> {
        match s {
            Some("replay") => Ok(Action::Replay),
            Some("purge") => Ok(Action::Purge),
            _ => Err(OpsError::bad_request("action must be replay or purge")),
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }

    pub(super) fn verb(self) -> &'static str {
        match self {
            Action::Replay => "Replay",
            Action::Purge => "Purge",
        }
    }
}

pub(super) struct Job {
    pub id: String,
    pub action: Action,
    pub operator: String,
    /// The selection in words.
    pub what: String,
    /// How many matched when the operator confirmed.
    pub expected: u64,
    pub rate: Option<Rate>,
    /// Whether the job stops after the chosen ids (else it scans the whole queue).
    by_ids: bool,
    pub started_at: DateTime<Utc>,
    started: Instant,
    /// Dead letters in the queue when the job started: how many it looks at, at most.
    scan_total: AtomicU64,
    scanned: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    outcome: Mutex<Outcome>,
}

#[derive(Default, Clone)]
struct Outcome {
    finished: Option<Duration>,
    error: Option<String>,
    last_failure: Option<String>,
}

#[derive(Default)]
pub(super) struct Jobs(Mutex<VecDeque<Arc<Job>>>);

impl Jobs {
    pub(super) fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.0.lock().expect("jobs lock").iter().find(|j| j.id == id).cloned()
    }

    /// A job still running. Reading the dead queue meanwhile would hold messages the job has not
    /// reached yet (unacked on another channel), and it would miss them.
    pub(super) fn running(&self) -> Option<Arc<Job>> {
        self.0
            .lock()
            .expect("jobs lock")
            .iter()
            .find(|j| j.outcome.lock().expect("job lock").finished.is_none())
            .cloned()
    }

    pub(super) fn recent(&self) -> Vec<Arc<Job>> {
        self.0.lock().expect("jobs lock").iter().rev().cloned().collect()
    }
}

pub(super) struct JobRequest {
    pub action: Action,
    pub selection: Selection,
    pub what: String,
    pub expected: u64,
    pub rate: Option<Rate>,
}

/// Start a job in the background; returns it at once.
pub(super) fn start(state: &OpsState, operator: &Operator, request: JobRequest) -> Arc<Job> {
    let selection = request.selection;
    let job = Arc::new(Job {
        id: hex::encode(rand::random::<[u8; 8]>()),
        action: request.action,
        operator: operator.name.clone(),
        what: request.what,
        expected: request.expected,
        rate: request.rate,
        by_ids: matches!(selection, Selection::Ids(_)),
        started_at: Utc::now(),
        started: Instant::now(),
        scan_total: AtomicU64::new(0),
        scanned: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        outcome: Mutex::new(Outcome::default()),
    });
    {
        let mut jobs = state.0.jobs.0.lock().expect("jobs lock");
        jobs.push_back(job.clone());
        while jobs.len() > KEEP {
            jobs.pop_front();
        }
    }
    tracing::info!(
        operator = %job.operator, action = job.action.as_str(), job = %job.id, selection = %job.what,
        expected = job.expected, rate = ?job.rate.map(|r| r.to_string()), "ops console: dead-letter job started"
    );
    let (state, running) = (state.clone(), job.clone());
    tokio::spawn(async move {
        let result = execute(&state, &running, selection).await;
        let mut outcome = running.outcome.lock().expect("job lock");
        outcome.finished = Some(running.started.elapsed());
        let (done, failed) = (running.done.load(Ordering::Relaxed), running.failed.load(Ordering::Relaxed));
        match result {
            Ok(()) => tracing::info!(
                operator = %running.operator, action = running.action.as_str(), job = %running.id, done, failed,
                "ops console: dead-letter job finished"
            ),
            Err(e) => {
                tracing::error!(
                    operator = %running.operator, action = running.action.as_str(), job = %running.id, done, failed,
                    error = %format!("{e:#}"), "ops console: dead-letter job failed"
                );
                outcome.error = Some(format!("{e:#}"));
            }
        }
    });
    job
}

async fn execute(state: &OpsState, job: &Job, selection: Selection) -> anyhow::Result<()> {
    let (connection, channel) = super::dead_letters::open(state).await?;
    let result = async {
        let queue = state.0.topology.dead_queue.as_str();
        let depth = dlq::depth(&channel, queue).await?;
        job.scan_total.store(u64::from(depth), Ordering::Relaxed);
        let publisher = match job.action {
            Action::Replay => Some(ConfirmedPublisher::open(&connection).await?),
            Action::Purge => None,
        };
        dlq::settle(&channel, publisher.as_ref(), queue, &selection, depth as usize, job.rate, |step| {
            job.scanned.fetch_add(1, Ordering::Relaxed);
            match step {
                Step::Skipped => {}
                Step::Done(_) => {
                    job.done.fetch_add(1, Ordering::Relaxed);
                }
                Step::Failed(d, e) => {
                    job.failed.fetch_add(1, Ordering::Relaxed);
                    job.outcome.lock().expect("job lock").last_failure = Some(format!("{}: {e}", d.id));
                }
            }
        })
        .await?;
        if let Some(publisher) = publisher {
            let _ = publisher.channel().close(200, "done".into()).await;
        }
        anyhow::Ok(())
    }
    .await;
    // Closing the channel returns what the job looked at but did not take.
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
    result
}

pub(super) async fn progress(
    State(state): State<OpsState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, OpsError> {
    let job = state.0.jobs.get(&id).ok_or_else(|| OpsError::not_found(format!("no job `{id}` in this process")))?;
    let outcome = job.outcome.lock().expect("job lock").clone();
    let running = outcome.finished.is_none();
    let title = format!("{} job {}", job.action.verb(), job.id);
    // Reload while it runs; a finished job's page stays still.
    let refresh = running.then_some(1);
    Ok(super::html(
        StatusCode::OK,
        layout::page_with_refresh(&title, &operator, Nav::DeadLetters, refresh, render(&job, &outcome)),
    ))
}

fn render(job: &Job, outcome: &Outcome) -> Markup {
    let done = job.done.load(Ordering::Relaxed);
    let failed = job.failed.load(Ordering::Relaxed);
    let scanned = job.scanned.load(Ordering::Relaxed);
    let scan_total = job.scan_total.load(Ordering::Relaxed);
    let elapsed = outcome.finished.unwrap_or_else(|| job.started.elapsed()).as_secs_f64();
    let per_sec = if elapsed > 0.0 { done as f64 / elapsed } else { 0.0 };
    let (value, max) = if job.by_ids { (done + failed, job.expected) } else { (scanned, scan_total) };
    let status = match (&outcome.finished, &outcome.error) {
        (None, _) => html! { span.pill { "running" } },
        (Some(_), None) => html! { span.pill.good { "finished" } },
        (Some(_), Some(_)) => html! { span.pill.bad { "failed" } },
    };
    html! {
        p.summary { (status) " " (job.action.verb()) " " (job.what) ", started by " strong { (job.operator) } " at " (layout::time(job.started_at)) "." }
        progress value=(value) max=(max.max(1)) {}
        dl.props {
            dt { "done" } dd id="done" { (thousands(done)) " of " (thousands(job.expected)) " expected" }
            dt { "failed" } dd id="failed" { (thousands(failed)) }
            dt { "looked at" } dd { (thousands(scanned)) " of " (thousands(scan_total)) " in the dead queue" }
            dt { "rate" } dd { (format!("{per_sec:.1}/s")) " (limit " (job.rate.map(|r| r.to_string()).unwrap_or_else(|| "none".into())) ")" }
            dt { "elapsed" } dd { (human_secs(elapsed)) }
        }
        @if let Some(failure) = &outcome.last_failure {
            p.warn { "Last failure: " (failure) ". Failed dead letters stay in the dead queue." }
        }
        @if let Some(error) = &outcome.error {
            p.error { "The job stopped: " (error) ". What it had not reached stays in the dead queue." }
        }
        @if outcome.finished.is_some() {
            p { a href="/ops/dead-letters" { "Back to the dead letters" } }
        } @else {
            p.muted { "This page reloads every second." }
        }
    }
}

/// The recent jobs, for the dead-letter page.
pub(super) fn recent_table(state: &OpsState) -> Markup {
    let jobs = state.0.jobs.recent();
    html! {
        @if !jobs.is_empty() {
            h2 { "Recent jobs" }
            table {
                thead { tr { th { "job" } th { "action" } th { "selection" } th { "by" } th { "started" } th.num { "done" } th.num { "failed" } th { "state" } } }
                tbody {
                    @for j in jobs.iter().take(10) {
                        @let outcome = j.outcome.lock().expect("job lock").clone();
                        tr {
                            td.mono { a href=(format!("/ops/jobs/{}", j.id)) { (j.id) } }
                            td { (j.action.as_str()) }
                            td.clip { (j.what) }
                            td { (j.operator) }
                            td { (layout::time(j.started_at)) }
                            td.num { (thousands(j.done.load(Ordering::Relaxed))) }
                            td.num { (thousands(j.failed.load(Ordering::Relaxed))) }
                            td { @if outcome.finished.is_none() { "running" } @else if outcome.error.is_some() { "failed" } @else { "finished" } }
                        }
                    }
                }
            }
        }
    }
}
