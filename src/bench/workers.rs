//! `intake worker` child processes draining a pre-published backlog.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::cpu::CpuSnapshot;
use super::{Bench, RunResult, DEFAULT_BATCH, DEFAULT_PREFETCH};

impl Bench {
    pub(super) fn spawn_worker(&self, batch_size: Option<usize>) -> anyhow::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
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
        cmd.env("DATABASE_URL", &self.db_url)
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
            cmd.env("INTAKE_BATCH_SIZE", b.to_string());
            if b > usize::from(DEFAULT_PREFETCH) {
                cmd.env("INTAKE_PREFETCH", b.min(u16::MAX as usize).to_string());
            }
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

    pub(super) async fn run_workers(
        &mut self,
        name: &str,
        n: usize,
        workers: usize,
        batch_size: Option<usize>,
    ) -> anyhow::Result<RunResult> {
        self.say(format!("[{name}] publishing {n}…"));
        let (_, bodies) = self.payloads(n);
        let publish_secs = self.publish_backlog(bodies).await?;
        self.say(format!("[{name}] draining {n} with {workers} `intake worker` process(es)…"));
        let before = CpuSnapshot::take(&self.db_name, &[]);
        let mut children = Vec::new();
        for _ in 0..workers {
            children.push(self.spawn_worker(batch_size)?);
        }
        let pids: Vec<u32> = children.iter().filter_map(Child::id).collect();
        let queue = self.queue();
        let target = self.expected_rows + n as i64;
        // The clock starts at the first delivery: the queue depth drops below the backlog.
        let spawn = Instant::now();
        let first = loop {
            let (ready, _) = self.queue_state(&queue).await?;
            if (ready as usize) < n {
                break Instant::now();
            }
            for c in &mut children {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!("[{name}] worker exited early: {status}");
                }
            }
            anyhow::ensure!(spawn.elapsed() < Duration::from_secs(60), "[{name}] workers did not start consuming");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let mut last_progress = (self.rows().await?, Instant::now());
        let done = loop {
            let (ready, _) = self.queue_state(&queue).await?;
            if ready == 0 {
                let rows = self.rows().await?;
                if rows >= target {
                    break Instant::now();
                }
                if rows != last_progress.0 {
                    last_progress = (rows, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(25)).await;
                if last_progress.1.elapsed() > Duration::from_secs(10) {
                    let rows = self.rows().await?;
                    anyhow::ensure!(
                        rows != last_progress.0,
                        "[{name}] no progress for 10 s ({rows} rows, {ready} ready)"
                    );
                    last_progress = (rows, Instant::now());
                }
            }
            for c in &mut children {
                if let Some(status) = c.try_wait()? {
                    anyhow::bail!("[{name}] worker exited early: {status}");
                }
            }
        };
        let consume_secs = done.duration_since(first).as_secs_f64();
        let cpu = before.delta(&CpuSnapshot::take(&self.db_name, &pids), "bench process (poller)");
        stop_workers(children).await?;
        self.expected_rows = target;
        let rows = self.rows().await?;
        anyhow::ensure!(rows == target, "[{name}] {rows} rows, expected {target}");
        let dead = self.queue_state(&self.topology.dead_queue).await?.0;
        anyhow::ensure!(dead == 0, "[{name}] {dead} message(s) dead-lettered");
        let r = RunResult {
            name: name.to_owned(),
            messages: n,
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
