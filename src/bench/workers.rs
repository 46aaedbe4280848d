//! `intake worker` child processes (this executable) draining a pre-published backlog.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use uuid::Uuid;

use super::cpu::{Consumer, CpuSnapshot};
use super::payloads::BenchMessage;
use super::{Bench, RunResult, DEFAULT_BATCH, DEFAULT_PREFETCH};

/// Which rows show a run's progress.
pub(super) enum RowScope {
    /// `count(*)` of `messages`: every run so far stored `expected_rows`.
    Table,
    /// Only the rows in the run's own conversations, found by (entry point, thread key): for a
    /// table too big to count while polling.
    Run { entry_points: Vec<Uuid>, keys: Vec<String> },
}

/// A run that stops making progress for this long fails.
const STALL: Duration = Duration::from_secs(30);

impl Bench {
    pub(super) fn spawn_worker(&self, batch_size: Option<usize>) -> anyhow::Result<Child> {
        let mut cmd = Command::new(&self.subject.exe);
        cmd.arg("worker");
        for var in [
            "INTAKE_PREFETCH",
            "INTAKE_BATCH_SIZE",
            "INTAKE_BATCH_WAIT",
            "INTAKE_WORKER_QUEUES",
            "INTAKE_WITH_API",
            "INTAKE_QUEUE_TYPE",
            "INTAKE_RETRY_DELAYS",
            "INTAKE_DB_MAX_CONNECTIONS",
            "INTAKE_ATTACHMENT_DIR",
            "INTAKE_SMTP_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DATABASE_URL", &self.subject.db_url)
            .env("AMQP_URL", &self.args.amqp_url)
            .env("INTAKE_EXCHANGE", &self.topology.exchange)
            .env("INTAKE_QUEUE_PREFIX", &self.topology.queue_prefix)
            .env("INTAKE_DEAD_QUEUE", &self.topology.dead_queue)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.worker_log()?)
            .kill_on_drop(true);
        if let Some(b) = batch_size {
            // The defaults' prefetch per batch (room for the batch arriving beside those applied).
            let prefetch = b * usize::from(DEFAULT_PREFETCH) / DEFAULT_BATCH;
            cmd.env("INTAKE_BATCH_SIZE", b.to_string());
            // Over u16::MAX the worker refuses the batch size (prefetch below it) with a clear error.
            cmd.env("INTAKE_PREFETCH", prefetch.max(b).min(u16::MAX as usize).to_string());
        }
        Ok(cmd.spawn()?)
    }

    /// The workers' stderr (warnings and errors; RUST_LOG=warn) goes to a file, named when a
    /// run fails or with --keep, removed at the end otherwise.
    pub(super) fn worker_log_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("intake_bench_{}_workers.log", self.id))
    }

    pub(super) fn worker_log(&self) -> anyhow::Result<Stdio> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(self.worker_log_path())?;
        Ok(file.into())
    }

    /// Publish `messages`, then drain them with `workers` `intake worker` processes (default
    /// settings, or `batch_size`): timed from the first delivery (the ready count first drops)
    /// until every message's row is visible.
    pub(super) async fn drain(
        &mut self,
        key: &str,
        name: &str,
        messages: Vec<BenchMessage>,
        workers: usize,
        batch_size: Option<usize>,
        scope: &RowScope,
    ) -> anyhow::Result<RunResult> {
        let n = messages.len();
        let payload_bytes = messages.iter().map(|m| m.body.len()).sum::<usize>() / n.max(1);
        self.say(format!("[{name}] publishing {n}…"));
        let publish_secs = self.publish_backlog(messages).await?;
        self.say(format!("[{name}] draining {n} with {workers} `intake worker` process(es)…"));
        let target = match scope {
            RowScope::Table => self.subject.expected_rows + n as i64,
            RowScope::Run { .. } => n as i64,
        };
        let before = CpuSnapshot::take(&self.subject.db_name, &[]);
        let mut children = Vec::new();
        for _ in 0..workers {
            children.push(self.spawn_worker(batch_size)?);
        }
        let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
        // The clock starts at the first delivery: the ready count drops below the backlog.
        let spawn = Instant::now();
        let first = loop {
            if (self.ready().await? as usize) < n {
                break Instant::now();
            }
            exited_early(name, &mut children)?;
            anyhow::ensure!(spawn.elapsed() < Duration::from_secs(60), "[{name}] workers did not start consuming");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut progress = ((u32::MAX, -1), Instant::now());
        let mut dead_checked = Instant::now();
        let done = loop {
            let ready = self.ready().await?;
            let rows = if ready == 0 { self.count_rows(scope).await? } else { -1 };
            if rows >= target {
                break Instant::now();
            }
            if (ready, rows) != progress.0 {
                progress = ((ready, rows), Instant::now());
            }
            if ready == 0 && dead_checked.elapsed() > Duration::from_millis(500) {
                // Everything was delivered but rows are missing: dead-lettered, or retrying.
                self.no_dead_letters(name).await?;
                dead_checked = Instant::now();
            }
            anyhow::ensure!(
                progress.1.elapsed() < STALL,
                "[{name}] no progress for {} s ({ready} ready, {rows} of {target} rows)",
                STALL.as_secs()
            );
            exited_early(name, &mut children)?;
            tokio::time::sleep(Duration::from_millis(if ready == 0 { 5 } else { 25 })).await;
        };
        let consume_secs = done.duration_since(first).as_secs_f64();
        let cpu = before.usage_until(&CpuSnapshot::take(&self.subject.db_name, &pids), Consumer::Children);
        stop_workers(children).await?;
        let rows = self.count_rows(scope).await?;
        anyhow::ensure!(rows == target, "[{name}] {rows} rows, expected {target}");
        if let RowScope::Table = scope {
            self.subject.expected_rows = target;
        }
        self.no_dead_letters(name).await?;
        let r = RunResult {
            key: key.to_owned(),
            name: name.to_owned(),
            messages: n,
            payload_bytes,
            publish_secs,
            consume_secs,
            cpu,
            workers,
            batch_size: Some(batch_size.unwrap_or(DEFAULT_BATCH)),
            applied: Some(n as i64),
        };
        self.say(format!("[{name}] {:.0} msg/s", r.rate()));
        Ok(r)
    }

    /// A throughput run of ~1 KB webhooks spread over the conversations and entry points.
    pub(super) async fn run_spread(
        &mut self,
        key: &str,
        name: &str,
        n: usize,
        workers: usize,
        batch_size: Option<usize>,
    ) -> anyhow::Result<RunResult> {
        let (_, messages) = self.webhook_backlog(n, self.args.conversations);
        self.drain(key, name, messages, workers, batch_size, &RowScope::Table).await
    }

    async fn count_rows(&self, scope: &RowScope) -> anyhow::Result<i64> {
        match scope {
            RowScope::Table => self.rows().await,
            RowScope::Run { entry_points, keys } => Ok(sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE conversation_id IN (
                   SELECT c.id FROM conversations c
                     JOIN unnest($1::uuid[], $2::text[]) AS k(ep, key)
                       ON c.origin_entry_point_id = k.ep AND c.thread_key = k.key
                    WHERE c.thread_key IS NOT NULL)",
            )
            .bind(entry_points)
            .bind(keys)
            .fetch_one(&self.subject.pool)
            .await?),
        }
    }
}

fn exited_early(name: &str, children: &mut [Child]) -> anyhow::Result<()> {
    for c in children {
        if let Some(status) = c.try_wait()? {
            anyhow::bail!("[{name}] worker exited early: {status}");
        }
    }
    Ok(())
}

/// SIGTERM, then wait for a clean exit (the worker finishes and acks its batch).
pub(super) async fn stop_workers(children: Vec<Child>) -> anyhow::Result<()> {
    for c in &children {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for mut c in children {
        match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success() || status.code().is_none(), "worker exited with {status}");
            }
            Err(_) => {
                let _ = c.kill().await;
                anyhow::bail!("worker did not stop within 30 s of SIGTERM");
            }
        }
    }
    Ok(())
}
