//! `--compare-with OTHER`: before/after in one run. Another `intake` executable (built from an
//! earlier commit, say) drains the same backlogs right after this one, its `intake worker`
//! children on a database of its own that it migrated itself (so a schema change is compared
//! too), against the same broker, fast baseline and machine state. On a shared virtual machine
//! whose speed drifts between runs (see the steal column), back-to-back invocations are not
//! comparable; neighbouring runs of one invocation are.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::payloads::MixStats;
use super::report::{print_header, print_row, RunResult};

/// The names of the compared runs, as in the report's tables.
pub(super) const INTAKE_1: &str = "intake, 1 worker";
pub(super) const INTAKE_2: &str = "intake, 2 workers";
pub(super) const MIX: &str = "mix (real-size traffic, 1 worker)";
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
        let by_run = self.ratios_by_run();
        if by_run.iter().any(|(_, ratios)| ratios.len() > 1) {
            println!("  this / other by round (the other ran first in rounds 2, 4, …):");
            for (name, ratios) in by_run {
                let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                println!("    {name}: {}; median {:.2}", each.join(", "), median(&ratios));
            }
        }
    }

    /// Each compared run's this/other ratios in the order they ran, by run name (first seen first).
    fn ratios_by_run(&self) -> Vec<(&str, Vec<f64>)> {
        let mut by_run: Vec<(&str, Vec<f64>)> = Vec::new();
        for (this, other) in &self.pairs {
            let ratio = this.rate() / other.rate();
            match by_run.iter_mut().find(|(name, _)| *name == this.name) {
                Some((_, ratios)) => ratios.push(ratio),
                None => by_run.push((&this.name, vec![ratio])),
            }
        }
        by_run
    }

    pub fn json(&self, fast_rate: f64) -> serde_json::Value {
        json!({
            "other": self.other.display().to_string(),
            "otherVersion": self.other_version,
            "byRun": self.ratios_by_run().into_iter().map(|(name, ratios)| json!({
                "name": name,
                "thisOverOther": ratios,
                "median": median(&ratios),
            })).collect::<Vec<_>>(),
            "pairs": self.pairs.iter().map(|(this, other)| json!({
                "this": this.json(fast_rate),
                "other": other.json(fast_rate),
                "thisOverOther": this.rate() / other.rate(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The median of a non-empty list (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

impl Bench {
    /// Rounds 2..=`--rounds`: the 1- and 2-worker pairs (and the mix's, with `mix` messages) again,
    /// each on a new backlog; the other executable goes first in every second round, so a
    /// machine that speeds up or slows down during the bench favours neither side.
    pub(super) async fn more_rounds(
        &mut self,
        n: usize,
        mix: Option<usize>,
    ) -> anyhow::Result<Vec<(RunResult, RunResult)>> {
        let mut pairs = Vec::new();
        for round in 2..=self.args.rounds {
            let other_first = round % 2 == 0;
            self.say(format!("[compare] round {round} of {}", self.args.rounds));
            for (key, name, workers) in [("intake", INTAKE_1, 1), ("intake2Workers", INTAKE_2, 2)] {
                let (this, other) = self.spread_pair(key, name, n, workers, other_first).await?;
                pairs.extend(other.map(|o| (this, o)));
            }
            if let Some(m) = mix {
                let (this, _, other) = self.mix_pair(m, other_first).await?;
                pairs.extend(other.map(|o| (this, o)));
            }
        }
        Ok(pairs)
    }

    /// A spread run of this executable and, with `--compare-with`, the other's on the same
    /// backlog right before or after it.
    pub(super) async fn spread_pair(
        &mut self,
        key: &str,
        name: &str,
        n: usize,
        workers: usize,
        other_first: bool,
    ) -> anyhow::Result<(RunResult, Option<RunResult>)> {
        let run = self.next_run;
        let (other_key, other_name) = (format!("{key}Other"), format!("{name} [other]"));
        let mut other = None;
        if other_first {
            other = self.on_other(run, async |b| b.run_spread(&other_key, &other_name, n, workers, None).await).await?;
        }
        let this = self.run_spread(key, name, n, workers, None).await?;
        if !other_first {
            other = self.on_other(run, async |b| b.run_spread(&other_key, &other_name, n, workers, None).await).await?;
        }
        Ok((this, other))
    }

    /// A mix run of this executable and, with `--compare-with`, the other's on the same bytes
    /// right before or after it.
    pub(super) async fn mix_pair(
        &mut self,
        n: usize,
        other_first: bool,
    ) -> anyhow::Result<(RunResult, MixStats, Option<RunResult>)> {
        let run = self.next_run;
        let other_name = format!("{MIX} [other]");
        let mut other = None;
        if other_first {
            other = self.on_other(run, async |b| b.run_mix(n, "mixOther", &other_name).await).await?;
        }
        let (this, stats) = self.run_mix(n, "mix", MIX).await?;
        if !other_first {
            other = self.on_other(run, async |b| b.run_mix(n, "mixOther", &other_name).await).await?;
        }
        Ok((this, stats, other.map(|(o, _)| o)))
    }

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
}
