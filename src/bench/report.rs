//! The results of one `intake bench` and how they are printed: a table, or one JSON document.

use serde_json::json;

use super::check::CheckResult;
use super::cpu::CpuUsage;
use super::disk::DiskUsage;
use super::fill::FillResult;
use super::payloads::MixStats;
use super::DEFAULT_BATCH;

/// One throughput run.
#[derive(Debug, Clone)]
pub(super) struct RunResult {
    /// Name of the run in the JSON document (`fastBaseline`, `intake`, …).
    pub key: String,
    /// Name in the table.
    pub name: String,
    pub messages: usize,
    pub payload_bytes: usize,
    pub publish_secs: f64,
    pub consume_secs: f64,
    pub cpu: CpuUsage,
    pub workers: usize,
    pub batch_size: Option<usize>,
    /// Rows the run added (None for the broker-only baselines).
    pub applied: Option<i64>,
}

impl RunResult {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.consume_secs.max(1e-9)
    }

    pub fn publish_rate(&self) -> f64 {
        self.messages as f64 / self.publish_secs.max(1e-9)
    }

    pub fn json(&self, fast_rate: f64) -> serde_json::Value {
        let mut doc = json!({
            "name": self.name,
            "messages": self.messages,
            "payloadBytesAvg": self.payload_bytes,
            "workers": self.workers,
            "batchSize": self.batch_size,
            "publishSeconds": self.publish_secs,
            "publishRate": self.publish_rate(),
            "consumeSeconds": self.consume_secs,
            "rate": self.rate(),
            "overFastBaseline": self.rate() / fast_rate,
            "applied": self.applied,
        });
        if let (Some(doc), serde_json::Value::Object(cpu)) = (doc.as_object_mut(), self.cpu.json(self.messages)) {
            doc.extend(cpu);
        }
        doc
    }
}

#[derive(Debug, Clone)]
pub(super) struct LatencyResult {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub messages: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The same, for messages published after the first [`super::latency::SETTLE`]: a new
    /// worker opens its connections and every run's 500 conversations are created then.
    pub settled_p50_ms: f64,
    pub settled_p99_ms: f64,
    /// PostgreSQL checkpoints that started during the paced run (server-wide, from
    /// pg_stat_bgwriter), and the WAL written per message: a checkpoint's writes and the full
    /// page images after it are what the p99 moves with.
    pub checkpoints: i64,
    pub wal_bytes_per_message: f64,
}

/// Everything one bench measured.
pub(super) struct Report {
    pub id: String,
    pub database: String,
    pub cores: usize,
    pub messages: usize,
    pub slow_messages: usize,
    pub webhook_bytes: usize,
    pub conversations: usize,
    pub entry_points: usize,
    pub fast: RunResult,
    pub ack_each: RunResult,
    pub store_only: RunResult,
    pub naive: RunResult,
    pub intake: RunResult,
    pub intake2: RunResult,
    pub latency: LatencyResult,
    pub latency_load: f64,
    pub mix: Option<(RunResult, MixStats)>,
    pub hot: Option<RunResult>,
    pub big: Option<(RunResult, FillResult)>,
    pub sweep_workers: Vec<RunResult>,
    pub sweep_batches: Vec<RunResult>,
    pub disk: DiskUsage,
    pub check: CheckResult,
    pub compared: Option<super::compare::Comparison>,
    pub elapsed: f64,
}

/// `1234567.8` → `1,234,568`
pub(super) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// `12345678` bytes → `11.8 MiB`
pub(super) fn bytes(n: i64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1024.0 * 1024.0 * 1024.0 => format!("{:.2} GiB", n / 1024.0 / 1024.0 / 1024.0),
        n if n >= 1024.0 * 1024.0 => format!("{:.1} MiB", n / 1024.0 / 1024.0),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n:.0} B"),
    }
}

const NAME_WIDTH: usize = 42;

pub(super) fn print_header() {
    println!(
        "{:<NAME_WIDTH$} {:>8} {:>14} {:>16} {:>14} {:>18} {:>16} {:>7}",
        "run",
        "msgs",
        "consume msg/s",
        "× fast baseline",
        "worker µs/msg",
        "PostgreSQL µs/msg",
        "RabbitMQ µs/msg",
        "steal"
    );
}

pub(super) fn print_row(r: &RunResult, fast_rate: f64) {
    let (worker, postgres, rabbit) = r.cpu.per_message(r.messages);
    let mark = if r.cpu.worker_is_bench { "*" } else { " " };
    println!(
        "{:<NAME_WIDTH$} {:>8} {:>14} {:>16.3} {:>13.1}{mark} {:>18.1} {:>16.1} {:>6.1}%",
        r.name,
        r.messages,
        thousands(r.rate()),
        r.rate() / fast_rate,
        worker,
        postgres,
        rabbit,
        r.cpu.steal * 100.0
    );
}

impl Report {
    fn ratios(&self) -> serde_json::Value {
        let intake = self.intake.rate();
        json!({
            "intakeOverFastBaseline": intake / self.fast.rate(),
            "intakeOverAckEachBaseline": intake / self.ack_each.rate(),
            "intakeOverStoreOnlyBaseline": intake / self.store_only.rate(),
            "storeOnlyOverFastBaseline": self.store_only.rate() / self.fast.rate(),
            "intakeOverNaive": intake / self.naive.rate(),
            "intake2WorkersOverFastBaseline": self.intake2.rate() / self.fast.rate(),
            "mixOverFastBaseline": self.mix.as_ref().map(|(r, _)| r.rate() / self.fast.rate()),
            "hotOverFastBaseline": self.hot.as_ref().map(|r| r.rate() / self.fast.rate()),
            "hotOverIntake": self.hot.as_ref().map(|r| r.rate() / intake),
            "bigTableOverIntake": self.big.as_ref().map(|(r, _)| r.rate() / intake),
            "bigTableOverFastBaseline": self.big.as_ref().map(|(r, _)| r.rate() / self.fast.rate()),
        })
    }

    /// Every run of the main table, in its order: the baselines, intake, then the scenarios that ran.
    fn runs(&self) -> impl Iterator<Item = &RunResult> {
        let main = [&self.fast, &self.ack_each, &self.store_only, &self.naive, &self.intake, &self.intake2];
        let scenarios = [self.mix.as_ref().map(|(r, _)| r), self.hot.as_ref(), self.big.as_ref().map(|(r, _)| r)];
        main.into_iter().chain(scenarios.into_iter().flatten())
    }

    pub fn json(&self) -> serde_json::Value {
        let fast = self.fast.rate();
        let mut runs = serde_json::Map::new();
        for r in self.runs() {
            runs.insert(r.key.clone(), r.json(fast));
        }
        json!({
            "bench": self.id,
            "database": self.database,
            "cores": self.cores,
            "messagesPerRun": self.messages,
            "slowMessages": self.slow_messages,
            "webhookPayloadBytesAvg": self.webhook_bytes,
            "conversations": self.conversations,
            "entryPoints": self.entry_points,
            "runs": runs,
            "ratios": self.ratios(),
            "latency": {
                "method": "paced run, 1 default worker; bench publish time -> NOTIFY delivered at the worker's commit",
                "load": self.latency_load,
                "targetRate": self.latency.target_rate,
                "achievedRate": self.latency.achieved_rate,
                "messages": self.latency.messages,
                "p50Ms": self.latency.p50_ms,
                "p99Ms": self.latency.p99_ms,
                "maxMs": self.latency.max_ms,
                "settledP50Ms": self.latency.settled_p50_ms,
                "settledP99Ms": self.latency.settled_p99_ms,
                "checkpoints": self.latency.checkpoints,
                "walBytesPerMessage": self.latency.wal_bytes_per_message,
            },
            "mix": self.mix.as_ref().map(|(_, stats)| stats.json()),
            "bigTable": self.big.as_ref().map(|(_, fill)| fill.json()),
            "disk": self.disk.json(),
            "sweepWorkers": self.sweep_workers.iter().map(|r| r.json(fast)).collect::<Vec<_>>(),
            "sweepBatchSizes": self.sweep_batches.iter().map(|r| r.json(fast)).collect::<Vec<_>>(),
            "check": self.check.json(),
            "compared": self.compared.as_ref().map(|c| c.json(fast)),
            "elapsedSeconds": self.elapsed,
        })
    }

    pub fn print(&self) {
        let fast = self.fast.rate();
        println!();
        println!(
            "intake bench {}: {} cores, {} msgs/run (naive: {}), ~{} B webhook JSON over {} conversations on {} entry points, durable queues, persistent messages",
            self.id, self.cores, self.messages, self.slow_messages, self.webhook_bytes, self.conversations, self.entry_points
        );
        println!();
        print_header();
        for r in self.runs() {
            print_row(r, fast);
        }
        println!("* in-process consumer: the bench process's own CPU. steal: the share of the machine's CPU time the hypervisor gave to others during the run (a shared VM: compare runs with little)");
        println!();
        let intake = self.intake.rate();
        println!(
            "intake (1 worker) / fast baseline = {:.2}   intake / ack-each baseline = {:.2}   intake / store-only = {:.2}   intake / naive = {:.1}",
            intake / fast,
            intake / self.ack_each.rate(),
            intake / self.store_only.rate(),
            intake / self.naive.rate()
        );
        if let Some(compared) = &self.compared {
            compared.print(fast);
            println!();
        }
        if let Some((r, stats)) = &self.mix {
            println!(
                "mix / fast baseline = {:.2}: {} msgs, avg payload {} B ({}), seed {}",
                r.rate() / fast,
                stats.messages,
                thousands(stats.average() as f64),
                stats.describe(),
                stats.seed
            );
        }
        if let Some(r) = &self.hot {
            println!(
                "hot / fast baseline = {:.2}   hot / intake (spread over {} conversations) = {:.2}",
                r.rate() / fast,
                self.conversations,
                r.rate() / intake
            );
        }
        if let Some((r, fill)) = &self.big {
            println!(
                "big table / intake (small table) = {:.2}   big table / fast baseline = {:.2}",
                r.rate() / intake,
                r.rate() / fast
            );
            println!("  {}", fill.describe());
        }
        for (title, runs) in [
            (format!("sweep: worker processes (batch {DEFAULT_BATCH})"), &self.sweep_workers),
            ("sweep: batch size (1 worker)".to_owned(), &self.sweep_batches),
        ] {
            if runs.is_empty() {
                continue;
            }
            println!();
            println!("{title}");
            print_header();
            for r in runs {
                print_row(r, fast);
            }
        }
        println!();
        println!(
            "latency (paced at {} msg/s = {:.0}% of intake 1 worker, {} msgs): publish->commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            thousands(self.latency.achieved_rate),
            self.latency_load * 100.0,
            self.latency.messages,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms
        );
        println!(
            "  after the first {} s (new worker, the run's conversations created): p50 {:.1} ms, p99 {:.1} ms",
            super::latency::SETTLE.as_secs(),
            self.latency.settled_p50_ms,
            self.latency.settled_p99_ms
        );
        println!(
            "  PostgreSQL during the paced run: {} checkpoint(s) started, {} B of WAL per message (server-wide)",
            self.latency.checkpoints,
            thousands(self.latency.wal_bytes_per_message)
        );
        println!();
        self.disk.print();
        println!();
        self.check.print();
        println!("elapsed: {:.0} s", self.elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_readable() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-12_345.0), "-12,345");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
