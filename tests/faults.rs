//! Fault tests against the real `intake worker` binary, loopback only, time-bounded.
//!
//! While a publisher sends [`TOTAL`] generic-webhook messages over [`CONVERSATIONS`]
//! conversations (their `occurredAt` values deliberately out of order), the worker is
//! SIGKILLed and restarted [`KILLS`] times at random intervals, and the links around it fail:
//!
//! - `faults_kill_worker_and_drop_connections` (runs with the normal, parallel suite): once,
//!   RabbitMQ force-closes this test's own connections (found by the queue prefix in their
//!   connection names); once, PostgreSQL terminates the backends of this test's own database.
//! - `faults_restart_rabbitmq_and_postgresql` (`#[ignore]`: it restarts the shared services,
//!   so `.ci/run` runs it alone): the same, plus a real RabbitMQ restart (`stop_app` /
//!   `start_app`) and a real PostgreSQL restart (`pg_ctlcluster stop` / `start`), with the
//!   worker SIGKILLed and started again while each service is down. The publisher reconnects
//!   and re-publishes whatever was not confirmed (ids dedupe the copies). A worker that ends by
//!   itself is started again after 500 ms, as a supervisor would, and counted (`self_exits`);
//!   the test fails if any did: a worker started while the database is down must wait for it.
//!
//! At the end: every published id applied exactly once, every conversation's timestamps equal
//! the newest of its messages (computed from the published set), and this test's queues hold
//! nothing, neither ready nor unacknowledged (dead queue included). `FAULTS_SEED` replays a
//! run's kill intervals.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use intake::adapters::ChannelType;
use intake::amqp::publish::{new_message_properties, ConfirmedPublisher};
use intake::amqp::topology::Topology;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::process::{Child, Command};

const TOTAL: usize = 4000;
const CONVERSATIONS: usize = 50;
const KILLS: usize = 12;
/// Messages per publisher-confirm round; a round that fails is published again whole.
const CHUNK: usize = 100;
/// Pause between rounds.
const CHUNK_PAUSE: Duration = Duration::from_millis(50);
/// Rounds the publisher may send just before each kill, so that kills meet messages in flight.
const ROUNDS_BEFORE_KILL: usize = 2;
/// Rounds granted after each kill or fault: the worker must apply some of them to show it
/// recovered. 12 kills × 3 + 4 faults = 40 rounds = TOTAL; what is left goes out at the end.
const ROUNDS_AFTER_FAULT: usize = 1;
const FIRST_ROUNDS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_kill_worker_and_drop_connections() {
    faults(Scenario { name: "faults_kill_worker_and_drop_connections", restart_services: false, limit_secs: 120 })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ and PostgreSQL: run alone (.ci/run does)"]
async fn faults_restart_rabbitmq_and_postgresql() {
    let _services = ServicesGuard; // whatever happens, both services are started again
    faults(Scenario { name: "faults_restart_rabbitmq_and_postgresql", restart_services: true, limit_secs: 180 }).await;
}

struct Scenario {
    name: &'static str,
    /// Also restart RabbitMQ and PostgreSQL (once each).
    restart_services: bool,
    /// Hard limit for the whole test.
    limit_secs: u64,
}

/// Counters shared with the publisher and shown on success and on timeout.
#[derive(Default)]
struct Figures {
    phase: Mutex<String>,
    applied: AtomicUsize,
    confirmed: AtomicUsize,
    publish_calls: AtomicUsize,
    publisher_reconnects: AtomicUsize,
    kills: AtomicUsize,
    /// Kills that left confirmed messages unapplied (in flight or queued).
    kills_mid_stream: AtomicUsize,
    restarts: AtomicUsize,
    /// The worker process ended by itself (it must not, even when started while the database is down).
    exits: AtomicUsize,
    connections_closed: AtomicUsize,
    backends_terminated: AtomicUsize,
    rabbitmq_restarts: AtomicUsize,
    postgresql_restarts: AtomicUsize,
    notes: Mutex<Vec<String>>,
}

impl Figures {
    fn phase(&self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("faults: {what}");
        *self.phase.lock().unwrap() = what;
    }

    fn note(&self, note: String) {
        eprintln!("faults: {note}");
        self.notes.lock().unwrap().push(note);
    }

    fn line(&self, seconds: f64, seed: u64) -> String {
        let n = |a: &AtomicUsize| a.load(Relaxed);
        format!(
            "published={} confirmed={} republished={} publisher_reconnects={} applied={} kills={} (mid-stream {}) restarts={} \
             self_exits={} connections_closed={} backends_terminated={} rabbitmq_restarts={} postgresql_restarts={} \
             seconds={seconds:.1} seed={seed} {}",
            TOTAL,
            n(&self.confirmed),
            n(&self.publish_calls).saturating_sub(TOTAL),
            n(&self.publisher_reconnects),
            n(&self.applied),
            n(&self.kills),
            n(&self.kills_mid_stream),
            n(&self.restarts),
            n(&self.exits),
            n(&self.connections_closed),
            n(&self.backends_terminated),
            n(&self.rabbitmq_restarts),
            n(&self.postgresql_restarts),
            self.notes.lock().unwrap().join("; "),
        )
    }
}

async fn faults(scenario: Scenario) {
    let seed = std::env::var("FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let figures = Arc::new(Figures::default());
    let started = Instant::now();
    let limit = Duration::from_secs(scenario.limit_secs);
    let run = run_faults(&scenario, seed, figures.clone());
    if tokio::time::timeout(limit, run).await.is_err() {
        let phase = figures.phase.lock().unwrap().clone();
        panic!(
            "{}: did not finish within {}s (hard limit); stuck at: {phase}; {}",
            scenario.name,
            scenario.limit_secs,
            figures.line(started.elapsed().as_secs_f64(), seed)
        );
    }
    println!("{}: {}", scenario.name, figures.line(started.elapsed().as_secs_f64(), seed));
}

/// One published message and what it must leave behind.
struct Published {
    key: String,
    conversation: String,
    outbound: bool,
    at: DateTime<Utc>,
    body: String,
    payload: Vec<u8>,
}

fn published(i: usize) -> Published {
    let conversation = format!("c{}", i % CONVERSATIONS);
    // A permutation of TOTAL seconds (7919 is prime): times jump back and forth in publish
    // order, inside every conversation too.
    let at = at("2025-01-01T00:00:00Z") + chrono::Duration::seconds(((i * 7919) % TOTAL) as i64);
    let outbound = (i * 31 + i / 7).is_multiple_of(3);
    let key = format!("f-{i}");
    let body = format!("fault message {i}");
    let mut payload = json!({"id": key, "conversationKey": conversation, "body": body,
        "direction": if outbound { "outbound" } else { "inbound" }, "occurredAt": at.to_rfc3339()});
    payload["sender"] = if outbound {
        json!({"id": "agent-1", "displayName": "Agent"})
    } else {
        json!({"id": format!("cust-{conversation}"), "displayName": format!("Customer {conversation}")})
    };
    Published { key, conversation, outbound, at, body, payload: serde_json::to_vec(&payload).unwrap() }
}

/// What one conversation must look like once every message is applied.
#[derive(Debug, PartialEq)]
struct ConversationState {
    last_message_at: Option<DateTime<Utc>>,
    last_inbound_at: Option<DateTime<Utc>>,
    last_outbound_at: Option<DateTime<Utc>>,
    preview: Option<String>,
}

fn expected_conversations(messages: &[Published]) -> HashMap<String, ConversationState> {
    let mut out: HashMap<String, ConversationState> = HashMap::new();
    let mut newest: HashMap<&str, (DateTime<Utc>, &str)> = HashMap::new();
    for m in messages {
        let c = out.entry(m.conversation.clone()).or_insert(ConversationState {
            last_message_at: None,
            last_inbound_at: None,
            last_outbound_at: None,
            preview: None,
        });
        c.last_message_at = c.last_message_at.max(Some(m.at));
        if m.outbound {
            c.last_outbound_at = c.last_outbound_at.max(Some(m.at));
        } else {
            c.last_inbound_at = c.last_inbound_at.max(Some(m.at));
        }
        let n = newest.entry(&m.conversation).or_insert((m.at, &m.key));
        if (m.at, m.key.as_str()) >= *n {
            *n = (m.at, &m.key);
            c.preview = Some(m.body.clone());
        }
    }
    out
}

async fn run_faults(scenario: &Scenario, seed: u64, figures: Arc<Figures>) {
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    figures.phase(format!("{}: seed {seed}", scenario.name));
    let db = TestDb::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let prefix = format!("itest_{}", uuid::Uuid::new_v4().simple());
    let mut topology = Topology::with_prefix(&prefix);
    topology.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(400)];
    {
        let connection = intake::amqp::connect(AMQP_URL, &format!("intake-faults-setup {prefix}")).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        let _ = connection.close(200, "".into()).await;
    }
    let messages: Arc<Vec<Published>> = Arc::new((0..TOTAL).map(published).collect());

    let mut worker = Worker::start(&db.url, &topology, figures.clone());
    let rounds = Arc::new(tokio::sync::Semaphore::new(FIRST_ROUNDS));
    let publishing = tokio::spawn(publish_all(topology.clone(), messages.clone(), rounds.clone(), figures.clone()));

    let mut progress = Progress { db: &db, figures: &figures, rounds: rounds.clone(), last: 0 };
    figures.phase("waiting for the first applied message");
    progress.wait(&mut worker, 60, "the first message").await;

    for kill in 1..=KILLS {
        // Kill part-way through a burst of messages: once a random share of it is applied (the
        // worker is fast; a random delay alone mostly meets an idle one), at the latest after
        // 5 s. Every third kill comes after a random delay instead.
        let base = try_count(&db, "SELECT count(*) FROM messages").await.unwrap_or(progress.last);
        rounds.add_permits(ROUNDS_BEFORE_KILL);
        let burst = (ROUNDS_BEFORE_KILL * CHUNK) as i64;
        let (target, pause) = if kill.is_multiple_of(3) {
            (i64::MAX, Duration::from_millis(rng.random_range(30..700)))
        } else {
            (base + rng.random_range(1..burst * 3 / 4), Duration::from_secs(5))
        };
        figures.phase(format!(
            "{base} applied, {} confirmed; kill {kill} at {} applied or after {pause:?}",
            figures.confirmed.load(Relaxed),
            if target == i64::MAX { "-".to_owned() } else { target.to_string() }
        ));
        worker.run_until_applied(&db, target, pause).await;
        worker.kill_and_restart().await;
        let at_kill = try_count(&db, "SELECT count(*) FROM messages").await.unwrap_or(-1);
        if at_kill >= 0 && (at_kill as usize) < figures.confirmed.load(Relaxed) {
            figures.kills_mid_stream.fetch_add(1, Relaxed);
        }
        figures.phase(format!(
            "killed with {at_kill} applied, {} confirmed; waiting for progress after kill {kill}",
            figures.confirmed.load(Relaxed)
        ));
        progress.recovered(&mut worker, 60, &format!("progress after kill {kill}")).await;

        match kill {
            3 => {
                figures.phase("closing this test's broker connections");
                let (closed, worker_found) = close_connections(&prefix).await;
                assert!(worker_found, "found the worker's broker connection (`intake-worker {prefix}`)");
                figures.connections_closed.fetch_add(closed, Relaxed);
                figures.phase(format!("closed {closed} broker connections; waiting for progress"));
                progress.recovered(&mut worker, 60, "progress after the broker closed the connections").await;
            }
            5 if scenario.restart_services => {
                figures.phase("restarting RabbitMQ: stop_app");
                let down = Instant::now();
                rabbitmqctl_app("stop_app").await;
                // A worker that starts while the broker is down must wait for it.
                figures.phase("RabbitMQ is down; SIGKILL and restart the worker, then start_app");
                worker.kill_and_restart().await;
                worker.run_for(Duration::from_secs(1)).await;
                rabbitmqctl_app("start_app").await;
                rabbitmqctl_app("await_startup").await;
                figures.rabbitmq_restarts.fetch_add(1, Relaxed);
                let back = Instant::now();
                figures.phase("RabbitMQ is back; waiting for progress");
                progress.recovered(&mut worker, 90, "progress after the RabbitMQ restart").await;
                figures.note(format!(
                    "rabbitmq down {:.1}s, work resumed {:.1}s later",
                    (back - down).as_secs_f64(),
                    back.elapsed().as_secs_f64()
                ));
            }
            7 => {
                figures.phase("terminating this test database's PostgreSQL backends");
                let n = terminate_backends(&db.name).await;
                assert!(n >= 1, "terminated at least the worker's backend");
                figures.backends_terminated.fetch_add(n, Relaxed);
                figures.phase(format!("terminated {n} backends; waiting for progress"));
                progress.recovered(&mut worker, 60, "progress after the backends were terminated").await;
            }
            9 if scenario.restart_services => {
                figures.phase("restarting PostgreSQL: stop");
                let down = Instant::now();
                pg_ctlcluster("stop").await;
                let stop_took = down.elapsed();
                // The running worker meets the outage, then one starts during it.
                worker.run_for(Duration::from_secs(1)).await;
                figures.phase("PostgreSQL is down; SIGKILL and restart the worker, then start");
                worker.kill_and_restart().await;
                worker.run_for(Duration::from_secs(1)).await;
                pg_ctlcluster("start").await;
                figures.postgresql_restarts.fetch_add(1, Relaxed);
                let back = Instant::now();
                figures.phase("PostgreSQL is back; waiting for progress");
                progress.recovered(&mut worker, 90, "progress after the PostgreSQL restart").await;
                figures.note(format!(
                    "postgresql stop took {:.1}s, down {:.1}s in all, work resumed {:.1}s later",
                    stop_took.as_secs_f64(),
                    (back - down).as_secs_f64(),
                    back.elapsed().as_secs_f64()
                ));
            }
            _ => {}
        }
    }

    rounds.close(); // whatever is left goes out at once
    figures.phase("waiting for the publisher to finish");
    while !publishing.is_finished() {
        worker.run_for(Duration::from_millis(100)).await;
    }
    publishing.await.expect("publisher task");
    assert_eq!(figures.confirmed.load(Relaxed), TOTAL, "the broker confirmed every message");

    figures.phase("waiting for every message to be applied");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let distinct = try_count(&db, "SELECT count(DISTINCT idempotency_key) FROM messages").await;
        if let Some(n) = distinct {
            figures.applied.store(n as usize, Relaxed);
            if n as usize >= TOTAL {
                break;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for all {TOTAL} messages: {distinct:?} applied");
        worker.run_for(Duration::from_millis(100)).await;
    }

    // The worker is still running: nothing may stay ready or unacknowledged.
    figures.phase("waiting for this test's queues to be empty (ready and unacked)");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = queue_stats(&prefix).await;
        if stats.as_ref().is_some_and(|s| !s.is_empty() && s.iter().all(|q| q.1 == 0 && q.2 == 0)) {
            break;
        }
        assert!(Instant::now() < deadline, "queues not empty 30s after the last message was applied: {stats:?}");
        worker.run_for(Duration::from_millis(500)).await;
    }

    figures.phase("stopping the worker (SIGTERM)");
    let status = worker.terminate().await;
    assert!(status.success(), "worker exit status after SIGTERM: {status}");
    let stats = queue_stats(&prefix).await.expect("queue stats");
    let names: HashSet<&str> = stats.iter().map(|q| q.0.as_str()).collect();
    for queue in topology.all_queues() {
        assert!(names.contains(queue.as_str()), "queue {queue} exists: {stats:?}");
    }
    let left: Vec<_> = stats.iter().filter(|q| q.1 != 0 || q.2 != 0).collect();
    assert!(left.is_empty(), "messages left in this test's queues (name, ready, unacked): {left:?}");

    figures.phase("checking the database");
    verify_database(&db, &messages).await;
    // A worker started while the database is down waits for it (`connect_and_migrate_patiently`).
    assert_eq!(figures.exits.load(Relaxed), 0, "the worker exited by itself (see its log above)");
    assert!(figures.kills.load(Relaxed) >= 10);
    figures.phase(format!("done in {:.1}s", started.elapsed().as_secs_f64()));

    // Clean up (best effort) only on success: a failed run keeps its queues for a look.
    if let Ok(connection) = intake::amqp::connect(AMQP_URL, &format!("intake-faults-setup {prefix}")).await {
        if let Ok(channel) = connection.create_channel().await {
            for q in topology.all_queues() {
                let _ = channel.queue_delete(q.as_str().into(), Default::default()).await;
            }
            let _ = channel.exchange_delete(topology.exchange.as_str().into(), Default::default()).await;
        }
        let _ = connection.close(200, "".into()).await;
    }
}

/// Every id once, in its conversation, with its time; conversation timestamps at the newest.
async fn verify_database(db: &TestDb, messages: &[Published]) {
    let rows: Vec<(String, Option<String>, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT m.idempotency_key, c.thread_key, m.direction, m.occurred_at
           FROM messages m JOIN conversations c ON c.id = m.conversation_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected: HashMap<&str, &Published> = messages.iter().map(|m| (m.key.as_str(), m)).collect();
    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    for (stored_key, thread, direction, occurred_at) in &rows {
        // Generic-webhook keys are stored scoped to their entry point.
        let key = stored_key.strip_prefix("webhook:shop:").unwrap_or(stored_key);
        if !seen.insert(key) {
            duplicates.push(key.to_owned());
        }
        let m = expected.get(key).unwrap_or_else(|| panic!("a message nobody published: {key}"));
        assert_eq!(thread.as_deref(), Some(m.conversation.as_str()), "conversation of {key}");
        assert_eq!(direction, if m.outbound { "outbound" } else { "inbound" }, "direction of {key}");
        assert_eq!(*occurred_at, m.at, "occurredAt of {key}");
    }
    assert!(
        duplicates.is_empty(),
        "{} duplicate rows, e.g. {:?}",
        duplicates.len(),
        &duplicates[..5.min(duplicates.len())]
    );
    let missing: Vec<&str> = expected.keys().filter(|k| !seen.contains(*k)).copied().collect();
    assert!(missing.is_empty(), "{} messages lost, e.g. {:?}", missing.len(), &missing[..5.min(missing.len())]);
    assert_eq!(rows.len(), TOTAL);

    let conversations: Vec<(Option<String>, ConversationStateRow)> = sqlx::query_as::<_, ConversationStateRow>(
        "SELECT thread_key, last_message_at, last_inbound_at, last_outbound_at, preview FROM conversations",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.thread_key.clone(), r))
    .collect();
    let want = expected_conversations(messages);
    assert_eq!(conversations.len(), CONVERSATIONS, "one conversation per key");
    let mut wrong = Vec::new();
    for (thread, row) in conversations {
        let thread = thread.expect("thread key");
        let got = ConversationState {
            last_message_at: row.last_message_at,
            last_inbound_at: row.last_inbound_at,
            last_outbound_at: row.last_outbound_at,
            preview: row.preview,
        };
        let want = want.get(&thread).unwrap_or_else(|| panic!("unexpected conversation {thread}"));
        if got != *want {
            wrong.push(format!("{thread}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "conversation state differs from the newest messages:\n{}", wrong.join("\n"));
}

#[derive(sqlx::FromRow)]
struct ConversationStateRow {
    thread_key: Option<String>,
    last_message_at: Option<DateTime<Utc>>,
    last_inbound_at: Option<DateTime<Utc>>,
    last_outbound_at: Option<DateTime<Utc>>,
    preview: Option<String>,
}

/// A count that tolerates a database that is restarting or just cut our connection.
async fn try_count(db: &TestDb, sql: &str) -> Option<i64> {
    let query = sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool);
    tokio::time::timeout(Duration::from_secs(5), query).await.ok()?.ok()
}

/// Waits for the applied count to grow, supervising the worker meanwhile.
struct Progress<'a> {
    db: &'a TestDb,
    figures: &'a Figures,
    rounds: Arc<tokio::sync::Semaphore>,
    last: i64,
}

impl Progress<'_> {
    /// After a kill or fault: note the count, let the publisher send more, and wait until the
    /// (restarted or reconnected) worker applies some of it.
    async fn recovered(&mut self, worker: &mut Worker, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(n) = try_count(self.db, "SELECT count(*) FROM messages").await {
                self.last = n;
                break;
            }
            assert!(Instant::now() < deadline, "the test database did not answer within {secs}s");
            worker.run_for(Duration::from_millis(100)).await;
        }
        self.rounds.add_permits(ROUNDS_AFTER_FAULT);
        self.wait(worker, secs, what).await;
    }

    async fn wait(&mut self, worker: &mut Worker, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(n) = try_count(self.db, "SELECT count(*) FROM messages").await {
                self.figures.applied.store(n as usize, Relaxed);
                if n > self.last || n as usize >= TOTAL {
                    self.last = n;
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no {what} within {secs}s ({} applied)", self.last);
            worker.run_for(Duration::from_millis(50)).await;
        }
    }
}

/// The real worker binary, restarted when it is killed or ends by itself.
struct Worker {
    child: Child,
    db_url: String,
    topology: Topology,
    figures: Arc<Figures>,
    respawn_at: Option<Instant>,
}

impl Worker {
    fn start(db_url: &str, topology: &Topology, figures: Arc<Figures>) -> Self {
        let child = spawn_worker(db_url, topology);
        Worker { child, db_url: db_url.to_owned(), topology: topology.clone(), figures, respawn_at: None }
    }

    /// Let it run for `d`, starting it again (after 500 ms) if it exited by itself.
    async fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            if self.respawn_at.is_none() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    eprintln!("faults: the worker exited by itself ({status}); starting it again");
                    self.figures.exits.fetch_add(1, Relaxed);
                    self.respawn_at = Some(Instant::now() + Duration::from_millis(500));
                }
            }
            if self.respawn_at.is_some_and(|at| Instant::now() >= at) {
                self.child = spawn_worker(&self.db_url, &self.topology);
                self.respawn_at = None;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(50))).await;
        }
    }

    /// Let it run until `target` messages are applied, for at most `max`.
    async fn run_until_applied(&mut self, db: &TestDb, target: i64, max: Duration) {
        let until = Instant::now() + max;
        while Instant::now() < until {
            if try_count(db, "SELECT count(*) FROM messages").await.is_some_and(|n| n >= target) {
                return;
            }
            self.run_for(Duration::from_millis(5)).await;
        }
    }

    async fn kill_and_restart(&mut self) {
        if self.respawn_at.take().is_none() {
            self.child.kill().await.expect("SIGKILL the worker"); // kill(2) with SIGKILL, then wait
            self.figures.kills.fetch_add(1, Relaxed);
        }
        self.child = spawn_worker(&self.db_url, &self.topology);
        self.figures.restarts.fetch_add(1, Relaxed);
    }

    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the worker is running");
        let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the worker exits within 30s of SIGTERM")
            .unwrap()
    }
}

fn spawn_worker(db_url: &str, t: &Topology) -> Child {
    worker_command(db_url, t)
        .env("INTAKE_DB_MAX_CONNECTIONS", "4")
        .env("INTAKE_BATCH_SIZE", "20")
        .env("RUST_LOG", "warn,intake::amqp::worker=error")
        .spawn()
        .expect("start intake worker")
}

/// Publish every message with confirms, in rounds of [`CHUNK`], each round when `rounds`
/// grants it (or at once once it is closed); when the connection fails,
/// reconnect and publish the unconfirmed round again (copies are fine: ids dedupe).
async fn publish_all(
    topology: Topology,
    messages: Arc<Vec<Published>>,
    rounds: Arc<tokio::sync::Semaphore>,
    figures: Arc<Figures>,
) {
    let name = format!("intake-faults-publisher {}", topology.queue_prefix);
    let mut session: Option<(lapin::Connection, ConfirmedPublisher)> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next = 0;
    let mut granted = false;
    while next < messages.len() {
        if !granted {
            // A closed semaphore means: no more pacing.
            if let Ok(permit) = rounds.acquire().await {
                permit.forget();
            }
            granted = true;
        }
        if session.is_none() {
            match open_publisher(&name).await {
                Ok(s) => {
                    session = Some(s);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    eprintln!("faults: publisher cannot connect ({e:#}); retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let (_, publisher) = session.as_ref().expect("connected");
        let round = &messages[next..(next + CHUNK).min(messages.len())];
        let items: Vec<_> = round
            .iter()
            .map(|m| {
                let headers = [(intake::amqp::envelope::EXTERNAL_CHANNEL_ID, "shop".to_owned())];
                (
                    "webhook.webhook".to_owned(),
                    m.payload.clone(),
                    new_message_properties(&m.key, "application/json", headers),
                )
            })
            .collect();
        figures.publish_calls.fetch_add(round.len(), Relaxed);
        let sent = tokio::time::timeout(
            Duration::from_secs(15),
            publisher.publish_pipelined(&topology.exchange, items, CHUNK),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                next += round.len();
                granted = false;
                figures.confirmed.store(next, Relaxed);
                tokio::time::sleep(CHUNK_PAUSE).await;
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no confirms within 15s".to_owned(),
                };
                eprintln!("faults: publishing round at {next} failed ({why}); reconnecting");
                figures.publisher_reconnects.fetch_add(1, Relaxed);
                session = None;
            }
        }
    }
    if let Some((connection, _)) = session {
        let _ = connection.close(200, "".into()).await;
    }
}

async fn open_publisher(name: &str) -> anyhow::Result<(lapin::Connection, ConfirmedPublisher)> {
    let connection = intake::amqp::connect(AMQP_URL, name).await?;
    let publisher = ConfirmedPublisher::open(&connection).await?;
    Ok((connection, publisher))
}

/// Run a command with a time limit; `None` when it could not run, failed or took too long.
async fn run(program: &str, args: &[&str], secs: u64) -> Option<String> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(secs), child).await {
        Ok(Ok(out)) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => {
            eprintln!("faults: `{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            None
        }
        Ok(Err(e)) => {
            eprintln!("faults: cannot run `{program}`: {e}");
            None
        }
        Err(_) => {
            eprintln!("faults: `{program} {}` took over {secs}s", args.join(" "));
            None
        }
    }
}

/// Force-close this test's broker connections: those whose client properties (connection
/// name) carry the test's unique queue prefix. Returns (closed, whether the worker's was one).
async fn close_connections(prefix: &str) -> (usize, bool) {
    let listing = run("rabbitmqctl", &["-q", "list_connections", "--no-table-headers", "pid", "client_properties"], 30)
        .await
        .expect("rabbitmqctl list_connections");
    let worker_name = format!("intake-worker {prefix}");
    let mut closed = 0;
    let mut worker_found = false;
    for line in listing.lines().filter(|l| l.contains(prefix)) {
        let pid = line.split_whitespace().next().expect("pid column");
        if run("rabbitmqctl", &["-q", "close_connection", pid, "faults test: connection dropped"], 30).await.is_some() {
            closed += 1;
            worker_found |= line.contains(&worker_name);
        }
    }
    (closed, worker_found)
}

/// (name, ready, unacked) of every queue under `prefix`; `None` while the broker does not answer.
async fn queue_stats(prefix: &str) -> Option<Vec<(String, u64, u64)>> {
    let args = ["-q", "list_queues", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"];
    let listing = run("rabbitmqctl", &args, 30).await?;
    let own = format!("{prefix}.");
    let mut out = Vec::new();
    for line in listing.lines() {
        let mut cols = line.split_whitespace();
        let (Some(name), Some(ready), Some(unacked)) = (cols.next(), cols.next(), cols.next()) else { continue };
        if name.starts_with(&own) {
            out.push((name.to_owned(), ready.parse().ok()?, unacked.parse().ok()?));
        }
    }
    Some(out)
}

/// `pg_terminate_backend` for every backend of this test's database (not anyone else's).
async fn terminate_backends(database: &str) -> usize {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&format!("{ADMIN_URL}/postgres")).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
                                WHERE datname = $1 AND pid <> pg_backend_pid()) t WHERE done",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let _ = admin.close().await;
    n as usize
}

async fn rabbitmqctl_app(command: &str) {
    run("rabbitmqctl", &[command], 120).await.unwrap_or_else(|| panic!("rabbitmqctl {command}"));
}

fn postgresql_version() -> String {
    let entry = std::fs::read_dir("/etc/postgresql").expect("/etc/postgresql").next().expect("a cluster").unwrap();
    entry.file_name().to_string_lossy().into_owned()
}

/// `pg_ctlcluster <version> main stop|start` (stop is a fast shutdown: sessions are cut).
async fn pg_ctlcluster(action: &str) {
    let version = postgresql_version();
    run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", action], 120)
        .await
        .unwrap_or_else(|| panic!("pg_ctlcluster {action}"));
    if action == "start" {
        for _ in 0..120 {
            if run("pg_isready", &["-q", "-h", "127.0.0.1", "-p", "5432"], 10).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("PostgreSQL did not answer within 60s of starting");
    }
}

/// Starts RabbitMQ and PostgreSQL again if a test left them down (even when it failed).
struct ServicesGuard;

impl Drop for ServicesGuard {
    fn drop(&mut self) {
        let ok = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok("rabbitmq-diagnostics", &["-q", "check_running"]) {
            eprintln!("faults: RabbitMQ is not running; starting it");
            if !ok("rabbitmqctl", &["start_app"]) {
                ok("rabbitmq-server", &["-detached"]);
            }
            ok("rabbitmqctl", &["await_startup"]);
        }
        if !ok("pg_isready", &["-h", "127.0.0.1", "-p", "5432"]) {
            eprintln!("faults: PostgreSQL is not answering; starting it");
            ok("pg_ctlcluster", &["--skip-systemctl-redirect", &postgresql_version(), "main", "start"]);
            for _ in 0..60 {
                if ok("pg_isready", &["-h", "127.0.0.1", "-p", "5432"]) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
