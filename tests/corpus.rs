//! The held-out real-traffic corpus (`../shared/corpus`, see its README and ORIGINS) through the
//! real worker: every file is one delivery, all of them go through one in-process
//! `intake::amqp::worker::run` on a fresh database and queues, and each file's outcome is
//! compared with the hand-reviewed `tests/corpus_expectations.json`.
//!
//! Routing:
//! - email (`email.email`): every mail is published with `x-intake-external-channel-id` naming
//!   the one registered mailbox (the adapter tries the mail's own Delivered-To/To/Cc first; none
//!   of those is registered, so the envelope's mailbox is the one that matches);
//! - chat (`chat.slack`, `chat.telegram`, `chat.whatsapp`, `chat.twilio-sms`): no envelope; the
//!   payload names its entry point (Slack channel id, Telegram chat id, WhatsApp
//!   phone_number_id, Twilio `To`), and the ids the corpus names are registered from the
//!   expectations file's `entry_points`.
//!
//! Outcome per file: `dead` (its `x-intake-reason`), `skipped` (the adapter found nothing to
//! apply; the worker's skipped counter must agree), `applied` (messages stored, edits/deletes/
//! statuses applied) or `parked` (an edit/delete/status whose message is not there, kept in
//! `parked_updates`). Mails also compare stored subject, sender address and attachment names.
//!
//! The corpus is third-party data (incl. AGPL): it is read in place and never copied here; the
//! test passes with a message when it is absent.
//!
//! Run: `cargo nextest run -E 'binary(corpus)' --no-capture`; `CORPUS_PRINT_ALL=1` prints every
//! file's actual outcome (for reviewing the expectations); `INTAKE_CORPUS_DIR` points elsewhere.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use intake::adapters::{AdapterRegistry, ChannelType, Delivery, Headers, NormalizedMessage, UpdateAction};
use intake::amqp::publish::new_message_properties;
use serde::Deserialize;
use serde_json::Value;

/// The one email entry point; every mail names it in its envelope.
const MAILBOX: &str = "support@corpus.intake.test";

/// (folder under the corpus, file extension, routing key, content type)
const SETS: [(&str, &str, &str, &str); 6] = [
    ("email/zammad", "box", "email.email", "message/rfc822"),
    ("email/mail-parser", "eml", "email.email", "message/rfc822"),
    ("slack", "json", "chat.slack", "application/json"),
    ("telegram", "json", "chat.telegram", "application/json"),
    ("whatsapp", "json", "chat.whatsapp", "application/json"),
    ("twilio", "form", "chat.twilio-sms", "application/x-www-form-urlencoded"),
];

struct CorpusFile {
    /// Path under the corpus, e.g. `email/zammad/mail001.box`.
    label: String,
    set: &'static str,
    routing_key: &'static str,
    content_type: &'static str,
    envelope: Option<&'static str>,
    body: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectations {
    #[serde(rename = "_about")]
    _about: Vec<String>,
    /// Adapter key → external channel ids to register.
    entry_points: BTreeMap<String, Vec<String>>,
    files: BTreeMap<String, Expected>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// What the file is.
    #[allow(dead_code)]
    note: String,
    /// applied | skipped | dead | parked
    outcome: String,
    reason: Option<String>,
    messages: Option<usize>,
    #[serde(default)]
    changes: Vec<String>,
    subject: Option<String>,
    from: Option<String>,
    attachments: Option<Vec<String>>,
    /// Why the expectation differs from what intake does today, or why it is what it is.
    #[allow(dead_code)]
    why: Option<String>,
}

#[derive(Debug, Default)]
struct Actual {
    outcome: String,
    reason: Option<String>,
    error: String,
    messages: usize,
    changes: Vec<String>,
    subject: Option<String>,
    from: Option<String>,
    attachments: Option<Vec<String>>,
    /// (name, media type) of each stored attachment, for the printout.
    attachment_types: Vec<String>,
}

impl Actual {
    fn summary(&self) -> String {
        let mut s = self.outcome.clone();
        if let Some(r) = &self.reason {
            s += &format!(" {r}");
        }
        if self.outcome == "applied" {
            s += &format!(" messages={}", self.messages);
        }
        if !self.changes.is_empty() {
            s += &format!(" changes={:?}", self.changes);
        }
        if let Some(subject) = &self.subject {
            s += &format!(" subject={:?}", subject.chars().take(100).collect::<String>());
        }
        if let Some(from) = &self.from {
            s += &format!(" from={from:?}");
        }
        if let Some(a) = &self.attachments {
            s += &format!(" attachments={a:?}");
        }
        if !self.attachment_types.is_empty() {
            s += &format!(" types={:?}", self.attachment_types);
        }
        if !self.error.is_empty() {
            s += &format!(" ({})", self.error.chars().take(160).collect::<String>());
        }
        s
    }
}

/// `../shared/corpus` next to the repository, or `INTAKE_CORPUS_DIR`.
fn corpus_dir() -> PathBuf {
    std::env::var_os("INTAKE_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"))
}

fn corpus_files(root: &Path) -> Vec<CorpusFile> {
    let mut out = vec![];
    for (dir, ext, routing_key, content_type) in SETS {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{}: {e}", root.join(dir).display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
            .collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().unwrap().to_str().unwrap();
            out.push(CorpusFile {
                label: format!("{dir}/{name}"),
                set: dir.rsplit('/').next().unwrap(),
                routing_key,
                content_type,
                envelope: routing_key.starts_with("email.").then_some(MAILBOX),
                body: std::fs::read(&path).unwrap(),
            });
        }
    }
    out
}

fn message_id(i: usize) -> String {
    format!("corpus-{i:03}")
}

/// What the adapter alone makes of a file (used to know which keys and changes to look for).
async fn decode(
    registry: &AdapterRegistry,
    file: &CorpusFile,
) -> Result<Vec<intake::adapters::NormalizedUpdate>, String> {
    let (channel_type, key, _) = intake::amqp::envelope::parse_routing_key(file.routing_key).unwrap();
    let adapter = registry.get(channel_type, key).expect("adapter");
    let headers = Headers::new();
    let delivery = Delivery {
        body: &file.body,
        headers: &headers,
        external_channel_id: file.envelope,
        received_at: chrono::Utc::now(),
    };
    adapter.decode(&delivery).await.map_err(|e| e.reason_code().to_owned())
}

/// A stored message, as JSON (`to_jsonb` of the row, so columns added later come along).
type Row = serde_json::Map<String, Value>;

fn text(row: &Row, column: &str) -> Option<String> {
    row.get(column).and_then(Value::as_str).map(str::to_owned)
}

/// The stored row that is this message: its key (or a key derived from it), and its content.
fn find_row<'a>(rows: &'a [Row], m: &NormalizedMessage) -> (Option<&'a Row>, Option<&'a Row>) {
    let nul = |s: &str| s.replace('\0', "\u{FFFD}");
    let same_key = rows.iter().find(|r| text(r, "idempotency_key").as_deref() == Some(m.idempotency_key.as_str()));
    let fingerprint = m.fingerprint();
    let mine = rows.iter().find(|r| {
        let key = text(r, "idempotency_key").unwrap_or_default();
        let keyed = key == m.idempotency_key
            || key.starts_with(&m.idempotency_key)
            || text(r, "fingerprint").as_deref() == Some(fingerprint.as_str());
        let meta = r.get("metadata").cloned().unwrap_or_default();
        let changed = meta.get("editedAt").is_some() || meta.get("deletedAt").is_some();
        keyed
            && text(r, "subject") == m.subject.as_deref().map(nul)
            && text(r, "sender_id") == m.sender.id.as_deref().map(nul)
            && (changed || text(r, "body").as_deref() == Some(nul(&m.body).as_str()))
    });
    (mine, same_key)
}

fn attachment_names(row: &Row) -> Vec<String> {
    let mut names: Vec<String> = row
        .get("attachments")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.get("filename").and_then(Value::as_str).unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_ends_as_the_reviewed_expectation_says() {
    let root = corpus_dir();
    if !root.join("ORIGINS.md").exists() {
        println!(
            "SKIPPED: the corpus is not at {} (it is not part of the repository); nothing to check",
            root.display()
        );
        return;
    }
    let started = Instant::now();
    let expectations: Expectations = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus_expectations.json")).unwrap(),
    )
    .expect("tests/corpus_expectations.json");
    let files = corpus_files(&root);
    let labels: BTreeSet<&str> = files.iter().map(|f| f.label.as_str()).collect();
    let print_all = std::env::var_os("CORPUS_PRINT_ALL").is_some();
    if !print_all {
        for label in &labels {
            assert!(expectations.files.contains_key(*label), "{label}: no expectation (add one, reviewed by hand)");
        }
        for label in expectations.files.keys() {
            assert!(labels.contains(label.as_str()), "{label}: expected, but not in the corpus");
        }
    }

    // A fresh database and queues, the entry points the corpus names, one worker.
    let metrics = intake::metrics::handle();
    let db = TestDb::new().await;
    let broker = TestBroker::new().await; // retries after 200 ms and 400 ms, then retries_exhausted
    db.project_with_entry_point("corpus", ChannelType::Email, "email", MAILBOX).await;
    for (adapter, ids) in &expectations.entry_points {
        for id in ids {
            db.project_with_entry_point("corpus", ChannelType::Chat, adapter, id).await;
        }
    }
    let registry = AdapterRegistry::with_defaults();
    let worker = start_worker_with(&db.url, &broker, registry.clone(), |_| {}).await;

    let items = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let headers = f.envelope.map(|e| (intake::amqp::envelope::EXTERNAL_CHANNEL_ID, e.to_owned()));
            (f.routing_key.to_owned(), f.body.clone(), new_message_properties(&message_id(i), f.content_type, headers))
        })
        .collect::<Vec<_>>();
    let published = items.len() as u64;
    broker.publisher.publish_pipelined(&broker.topology.exchange, items, 64).await.unwrap();

    // Decided when every delivery was consumed for the last time (consumed - retried ==
    // published) and no queue holds anything, twice in a row; then the worker stops, which
    // settles the batch in hand.
    let work_queues: Vec<String> =
        broker.topology.all_queues().into_iter().filter(|q| *q != broker.topology.dead_queue).collect();
    // A generous deadline: past it, the comparison below shows what is undecided (MISSING).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet = 0;
    let mut timed_out = None;
    while quiet < 2 {
        assert!(!worker.handle.is_finished(), "the worker stopped: {:?}", worker.handle);
        let m = metrics.render();
        let settled = metric(&m, "intake_messages_consumed_total", "").saturating_sub(metric(
            &m,
            "intake_messages_retried_total",
            "",
        ));
        let mut ready = 0;
        for q in &work_queues {
            ready += broker.depth(q).await;
        }
        quiet = if settled == published && ready == 0 { quiet + 1 } else { 0 };
        if Instant::now() > deadline {
            timed_out = Some(format!("{settled}/{published} settled, {ready} ready in the work and retry queues"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let decided_secs = started.elapsed().as_secs_f64();
    assert!(!worker.handle.is_finished(), "the worker is alive after the whole corpus");
    worker.stop().await;
    if let Some(state) = &timed_out {
        println!("NOT DECIDED after 120 s: {state}");
    }
    for q in timed_out.is_none().then_some(&work_queues).into_iter().flatten() {
        assert_eq!(broker.depth(q).await, 0, "{q}: nothing ready or unacked is left after the worker stopped");
    }

    // Each file's outcome.
    let letters = broker.dead_letters().await;
    let dead: HashMap<String, &intake::amqp::dlq::DeadLetter> =
        letters.iter().map(|d| (d.message_id.clone().unwrap_or_default(), d)).collect();
    assert_eq!(dead.len(), letters.len(), "a delivery dead-lettered twice");
    let rows: Vec<Row> = sqlx::query_scalar::<_, Value>("SELECT to_jsonb(m) FROM messages m")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
    let has_parked: bool =
        sqlx::query_scalar("SELECT to_regclass('parked_updates') IS NOT NULL").fetch_one(&db.pool).await.unwrap();
    let parked: BTreeSet<String> = if has_parked {
        sqlx::query_scalar("SELECT idempotency_key FROM parked_updates")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };

    let mut actuals: Vec<Actual> = vec![];
    for (i, file) in files.iter().enumerate() {
        let mut a = Actual::default();
        let is_mail = file.routing_key.starts_with("email.");
        if let Some(d) = dead.get(&message_id(i)) {
            a.outcome = "dead".into();
            a.reason = Some(d.reason.clone());
            a.error = d.error.clone();
            actuals.push(a);
            continue;
        }
        let updates = match decode(&registry, file).await {
            Ok(u) => u,
            Err(reason) => {
                a.outcome = format!("MISSING (the adapter says {reason}, not in the dead queue)");
                actuals.push(a);
                continue;
            }
        };
        if updates.is_empty() {
            a.outcome = "skipped".into();
            actuals.push(a);
            continue;
        }
        let mut missing = vec![];
        let mut parked_here = 0;
        for u in &updates {
            match &u.action {
                UpdateAction::Append(m) => {
                    let (mine, same_key) = find_row(&rows, m);
                    if mine.is_some() {
                        a.messages += 1;
                    } else if same_key.is_none() {
                        missing.push(format!("message {}", m.idempotency_key));
                    }
                    // A mail reports what is stored under its key, even if that is another mail.
                    if let Some(row) = mine.or(same_key).filter(|_| is_mail && a.subject.is_none()) {
                        a.subject = Some(text(row, "subject").unwrap_or_default());
                        a.from = Some(text(row, "sender_primary_email").unwrap_or_default());
                        a.attachments = Some(attachment_names(row));
                        a.attachment_types = row
                            .get("attachments")
                            .and_then(Value::as_array)
                            .map(|v| v.iter().map(|x| format!("{}:{}", x["filename"], x["contentType"])).collect())
                            .unwrap_or_default();
                    }
                }
                action => {
                    let key = u.idempotency_key();
                    let target = rows.iter().find(|r| text(r, "idempotency_key").as_deref() == Some(key));
                    let meta = target.and_then(|r| r.get("metadata")).cloned().unwrap_or_default();
                    let (label, done) = match action {
                        UpdateAction::Edit { .. } => ("edit".to_owned(), meta.get("editedAt").is_some()),
                        UpdateAction::Delete { .. } => ("delete".to_owned(), meta.get("deletedAt").is_some()),
                        // Statuses only move forward: a later one may have replaced this one.
                        UpdateAction::Status { status, .. } => {
                            (format!("status {status}"), meta.get("deliveryStatus").is_some())
                        }
                        UpdateAction::Append(_) => unreachable!(),
                    };
                    if done {
                        a.changes.push(label);
                    } else if parked.contains(key) {
                        parked_here += 1;
                    } else {
                        missing.push(format!("{label} of {key}"));
                    }
                }
            }
        }
        a.outcome = if !missing.is_empty() {
            format!("MISSING ({})", missing.join(", "))
        } else if parked_here > 0 && a.messages == 0 && a.changes.is_empty() {
            "parked".into()
        } else {
            "applied".into()
        };
        if is_mail && a.outcome == "applied" && a.subject.is_none() {
            a.subject = Some(String::new());
        }
        actuals.push(a);
    }

    // Compare.
    let mut failures = vec![];
    for (file, a) in files.iter().zip(&actuals) {
        if print_all {
            println!("ACTUAL {} | {}", file.label, a.summary());
        }
        let Some(e) = expectations.files.get(&file.label) else { continue };
        let mut diffs = vec![];
        if a.outcome != e.outcome {
            diffs.push(format!("outcome {} (expected {})", a.outcome, e.outcome));
        }
        if e.outcome == "dead" && a.outcome == "dead" && a.reason != e.reason {
            diffs.push(format!("reason {:?} (expected {:?})", a.reason, e.reason));
        }
        if e.outcome == "applied" && a.outcome == "applied" {
            if Some(a.messages) != e.messages {
                diffs.push(format!("messages {} (expected {:?})", a.messages, e.messages));
            }
            if a.changes != e.changes {
                diffs.push(format!("changes {:?} (expected {:?})", a.changes, e.changes));
            }
            if file.routing_key.starts_with("email.") {
                let show = |v: &Option<String>| v.as_ref().map_or("(none)".to_owned(), |s| format!("{s:?}"));
                let list = |v: &Option<Vec<String>>| v.as_ref().map_or("(none)".to_owned(), |l| format!("{l:?}"));
                for (what, actual, expected) in [
                    ("subject", show(&a.subject), show(&e.subject)),
                    ("from", show(&a.from), show(&e.from)),
                    ("attachments", list(&a.attachments), list(&e.attachments)),
                ] {
                    if actual != expected {
                        diffs.push(format!("{what} {actual} (expected {expected})"));
                    }
                }
            }
        }
        if !diffs.is_empty() {
            failures.push(format!(
                "{}: {}{}",
                file.label,
                diffs.join("; "),
                if a.error.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", a.error.chars().take(200).collect::<String>())
                }
            ));
        }
    }

    // The tables per set: what happened, and what should.
    let actual_cells = files.iter().zip(&actuals).map(|(f, a)| {
        let cell = match (&a.outcome[..], &a.reason) {
            ("dead", Some(r)) => format!("dead {r}"),
            (o, _) if o.starts_with("MISSING") => "MISSING".into(),
            (o, _) => o.to_owned(),
        };
        (f.set, cell)
    });
    println!("\nCorpus outcomes (actual), {published} files, decided in {decided_secs:.1}s:");
    print_table(actual_cells);
    let expected_cells = files.iter().filter_map(|f| {
        let e = expectations.files.get(&f.label)?;
        Some((
            f.set,
            if e.outcome == "dead" {
                format!("dead {}", e.reason.clone().unwrap_or_default())
            } else {
                e.outcome.clone()
            },
        ))
    });
    println!("\nCorpus outcomes (expected, tests/corpus_expectations.json):");
    print_table(expected_cells);

    // The worker's own count of skipped deliveries agrees with the files seen as skipped.
    let skipped = actuals.iter().filter(|a| a.outcome == "skipped").count() as u64;
    assert_eq!(metric(&metrics.render(), "intake_messages_skipped_total", ""), skipped, "skipped per the worker");

    println!("\n{} of {published} files differ from the expectations:", failures.len());
    for f in &failures {
        println!("  {f}");
    }
    broker.cleanup().await;
    assert!(timed_out.is_none(), "not every delivery was decided within 120 s");
    assert!(failures.is_empty(), "{} files differ from tests/corpus_expectations.json (listed above)", failures.len());
}

/// A Markdown table: one row per set, one column per outcome (dead letters by reason).
fn print_table(cells: impl Iterator<Item = (&'static str, String)>) {
    let mut table: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for (set, cell) in cells {
        *table.entry(set).or_default().entry(cell).or_default() += 1;
    }
    let order = |c: &String| match c.as_str() {
        "applied" => 0,
        "skipped" => 1,
        c if c.starts_with("dead") => 2,
        "parked" => 3,
        _ => 4,
    };
    let mut columns: Vec<String> =
        table.values().flat_map(|m| m.keys().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    columns.sort_by_key(|c| (order(c), c.clone()));
    println!("| set | files | {} |", columns.join(" | "));
    println!("|---|---|{}", "---|".repeat(columns.len()));
    let mut totals = vec![0; columns.len()];
    for (set, counts) in &table {
        let cells: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = counts.get(c).copied().unwrap_or(0);
                totals[i] += n;
                if n == 0 {
                    "·".to_owned()
                } else {
                    n.to_string()
                }
            })
            .collect();
        println!("| {set} | {} | {} |", counts.values().sum::<usize>(), cells.join(" | "));
    }
    let all: usize = totals.iter().sum();
    let totals: Vec<String> = totals.iter().map(usize::to_string).collect();
    println!("| **all** | {all} | {} |", totals.join(" | "));
}
