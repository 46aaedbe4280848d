//! `--compare-with OTHER`: before/after in one run. Another `intake` executable (built from an
//! earlier commit, say) drains the same backlogs right after this one, its `intake worker`
//! children on a database of its own that it migrated itself (so a schema change is compared
//! too), against the same broker, fast baseline and machine state. On a shared virtual machine
//! whose speed drifts between runs (see the steal column), back-to-back invocations are not
//! comparable; neighbouring runs of one invocation are.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::report::{print_header, print_row, RunResult};
use super::{bench_pool, with_database, Bench, Subject};

/// The pairs of runs: (this executable, the other), in the order they ran.
#[derive(Debug, Clone)]
pub(super) struct Comparison {
    pub other: PathBuf,
    pub other_version: String,
    pub pairs: Vec<(RunResult, RunResult)>,
}

impl Bench {
    /// Let `other` migrate a database of its own and register the same project and entry points.
    pub(super) async fn prepare_other(&mut self, other: &Path) -> anyhow::Result<Subject> {
        let db_name = format!("{}_other", self.subject.db_name);
        let db_url = with_database(&self.subject.db_url, &db_name);
        let status = tokio::process::Command::new(other)
            .arg("migrate")
            .env("DATABASE_URL", &db_url)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(self.worker_log()?)
            .status()
            .await
            .map_err(|e| anyhow::anyhow!("--compare-with {}: cannot run it: {e}", other.display()))?;
        anyhow::ensure!(
            status.success(),
            "--compare-with {}: `migrate` failed ({status}); its output is in {}",
            other.display(),
            self.worker_log_path().display()
        );
        let mut subject = Subject {
            exe: other.to_owned(),
            pool: bench_pool(&db_url).await?,
            db_url,
            db_name,
            webhook_entry_points: Vec::new(),
            expected_rows: 0,
        };
        std::mem::swap(&mut self.subject, &mut subject);
        let registered = self.register_entry_points().await;
        std::mem::swap(&mut self.subject, &mut subject);
        registered?;
        Ok(subject)
    }

    /// Every row the other executable's runs stored is there exactly once.
    pub(super) async fn check_other(&mut self) -> anyhow::Result<()> {
        let checked = self.on_other(self.next_run, async |b| b.stored_once().await).await;
        checked.map(|_| ()).map_err(|e| e.context("--compare-with: the other executable's database"))
    }
}

/// `OTHER --version`, or what went wrong asking.
pub(super) async fn version_of(exe: &Path) -> String {
    match tokio::process::Command::new(exe).arg("--version").output().await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => format!("(--version: {})", out.status),
        Err(e) => format!("(--version: {e})"),
    }
}

impl Comparison {
    pub fn print(&self, fast_rate: f64) {
        println!();
        println!(
            "before/after in this run: {} ({}) ran each backlog right after this executable, on a database it migrated",
            self.other.display(),
            self.other_version
        );
        print_header();
        for (this, other) in &self.pairs {
            print_row(this, fast_rate);
            print_row(other, fast_rate);
        }
        for (this, other) in &self.pairs {
            let (w, p, r) = this.cpu.per_message(this.messages);
            let (ow, op, or) = other.cpu.per_message(other.messages);
            println!(
                "  {}: this / other = {:.2} (msg/s {} / {}; µs/msg worker {:.0} / {:.0}, PostgreSQL {:.0} / {:.0}, RabbitMQ {:.0} / {:.0})",
                this.name,
                this.rate() / other.rate(),
                super::report::thousands(this.rate()),
                super::report::thousands(other.rate()),
                w,
                ow,
                p,
                op,
                r,
                or
            );
        }
    }

    pub fn json(&self, fast_rate: f64) -> serde_json::Value {
        json!({
            "other": self.other.display().to_string(),
            "otherVersion": self.other_version,
            "pairs": self.pairs.iter().map(|(this, other)| json!({
                "this": this.json(fast_rate),
                "other": other.json(fast_rate),
                "thisOverOther": this.rate() / other.rate(),
            })).collect::<Vec<_>>(),
        })
    }
}

impl Bench {
    /// `f` with the other executable and its database under test, `next_run` set back to `run`
    /// so that it gets the very backlog run `run` had; `None` without `--compare-with`.
    async fn on_other<T>(
        &mut self,
        run: usize,
        f: impl AsyncFnOnce(&mut Bench) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        let Some(mut other) = self.other.take() else { return Ok(None) };
        let next = std::mem::replace(&mut self.next_run, run);
        std::mem::swap(&mut self.subject, &mut other);
        let result = f(self).await;
        std::mem::swap(&mut self.subject, &mut other);
        self.next_run = next;
        self.other = Some(other);
        result.map(Some)
    }

    /// The spread run `run` (same messages, same keys) again, by the other executable.
    pub(super) async fn other_spread(
        &mut self,
        run: usize,
        this: &RunResult,
        workers: usize,
    ) -> anyhow::Result<Option<(RunResult, RunResult)>> {
        let (key, name) = (format!("{}Other", this.key), format!("{} [other]", this.name));
        let other = self.on_other(run, async |b| b.run_spread(&key, &name, this.messages, workers, None).await).await?;
        Ok(other.map(|o| (this.clone(), o)))
    }

    /// The mix run `run` (the same bytes) again, by the other executable.
    pub(super) async fn other_mix(
        &mut self,
        run: usize,
        this: &RunResult,
    ) -> anyhow::Result<Option<(RunResult, RunResult)>> {
        let name = format!("{} [other]", this.name);
        let other = self.on_other(run, async |b| b.run_mix(this.messages, "mixOther", &name).await).await?;
        Ok(other.map(|(o, _)| (this.clone(), o)))
    }
}
