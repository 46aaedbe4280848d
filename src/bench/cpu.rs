//! CPU seconds of the processes that take part in a run, from `/proc/<pid>/stat`, and the same
//! as microseconds per message.

use std::collections::{HashMap, HashSet};

use serde_json::json;

/// `/proc/<pid>/stat` counts CPU time in clock ticks; USER_HZ is 100 on Linux.
const CLOCK_TICKS: f64 = 100.0;

/// The groups a process is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// The `intake worker` children of this run.
    Workers,
    /// PostgreSQL backends connected to the bench database.
    PgBackends,
    /// PostgreSQL's WAL writer, checkpointer and background writer (shared by all databases).
    PgHelpers,
    /// RabbitMQ's `beam.smp` (shared by all vhosts).
    Rabbit,
}

/// Who consumed in a run: the bench process itself (broker-only, naive) or `intake worker`
/// children (the bench process only polls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Consumer {
    InProcess,
    Children,
}

/// CPU seconds of one run, by component.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct CpuUsage {
    /// The consumer: the worker children, or the bench process for in-process consumers.
    pub worker: f64,
    /// True when `worker` is the bench process (an in-process consumer).
    pub worker_is_bench: bool,
    /// The bench process while children consume (it polls queue depth and row counts).
    pub poller: f64,
    pub pg_backends: f64,
    pub pg_helpers: f64,
    pub rabbit: f64,
    /// Share of the machine's CPU time the hypervisor gave to others during the run (`steal`
    /// in `/proc/stat`): on a shared virtual machine, what makes one run slower than the next.
    pub steal: f64,
}

impl CpuUsage {
    /// PostgreSQL in all: the bench database's backends and the shared writers.
    pub fn postgres(&self) -> f64 {
        self.pg_backends + self.pg_helpers
    }

    /// Microseconds per message of each column of the report: (worker, PostgreSQL, RabbitMQ).
    pub fn per_message(&self, messages: usize) -> (f64, f64, f64) {
        (
            micros_per_message(self.worker, messages),
            micros_per_message(self.postgres(), messages),
            micros_per_message(self.rabbit, messages),
        )
    }

    pub fn json(&self, messages: usize) -> serde_json::Value {
        let (worker, postgres, rabbit) = self.per_message(messages);
        let round2 = |v: f64| (v * 100.0).round() / 100.0;
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        json!({
            "workerIs": if self.worker_is_bench { "bench process (in-process consumer)" } else { "intake worker processes" },
            "cpuSeconds": {
                "worker": round2(self.worker),
                "postgresBackends": round2(self.pg_backends),
                "postgresWriters": round2(self.pg_helpers),
                "postgres": round2(self.postgres()),
                "rabbitmq": round2(self.rabbit),
                "benchPoller": round2(self.poller),
            },
            "cpuStealShare": (self.steal * 1000.0).round() / 1000.0,
            "cpuMicrosPerMessage": {
                "worker": round1(worker),
                "postgres": round1(postgres),
                "rabbitmq": round1(rabbit),
            },
        })
    }
}

/// CPU seconds × 10⁶ / messages (0 for no messages).
pub(super) fn micros_per_message(cpu_secs: f64, messages: usize) -> f64 {
    if messages == 0 {
        return 0.0;
    }
    cpu_secs * 1e6 / messages as f64
}

/// CPU seconds of the processes that take part, by group, at one moment.
pub(super) struct CpuSnapshot {
    procs: HashMap<u32, (Group, f64)>,
    own: f64,
    /// The machine's (all CPU ticks, stolen ticks) since boot.
    machine: (u64, u64),
}

impl CpuSnapshot {
    /// `workers`: the pids of this run's `intake worker` children (empty for in-process runs).
    pub fn take(db_name: &str, workers: &[u32]) -> Self {
        let mut procs = HashMap::new();
        let workers: HashSet<u32> = workers.iter().copied().collect();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let Some(group) = group_of(pid, db_name, &workers) else { continue };
                if let Some(secs) = cpu_secs(pid) {
                    procs.insert(pid, (group, secs));
                }
            }
        }
        CpuSnapshot {
            procs,
            own: cpu_secs(std::process::id()).unwrap_or(0.0),
            machine: machine_ticks().unwrap_or((0, 0)),
        }
    }

    /// CPU seconds per component between `self` and `later` (processes that started in
    /// between count from zero; processes that ended in between are lost).
    pub fn usage_until(&self, later: &CpuSnapshot, consumer: Consumer) -> CpuUsage {
        let (all, stolen) =
            (later.machine.0.saturating_sub(self.machine.0), later.machine.1.saturating_sub(self.machine.1));
        let steal = if all == 0 { 0.0 } else { stolen as f64 / all as f64 };
        let mut usage = CpuUsage { worker_is_bench: consumer == Consumer::InProcess, steal, ..CpuUsage::default() };
        let own = (later.own - self.own).max(0.0);
        match consumer {
            Consumer::InProcess => usage.worker += own,
            Consumer::Children => usage.poller += own,
        }
        for (pid, (group, secs)) in &later.procs {
            let before = self.procs.get(pid).map(|(_, s)| *s).unwrap_or(0.0);
            let delta = (secs - before).max(0.0);
            match group {
                Group::Workers => usage.worker += delta,
                Group::PgBackends => usage.pg_backends += delta,
                Group::PgHelpers => usage.pg_helpers += delta,
                Group::Rabbit => usage.rabbit += delta,
            }
        }
        usage
    }
}

fn group_of(pid: u32, db_name: &str, workers: &HashSet<u32>) -> Option<Group> {
    if workers.contains(&pid) {
        return Some(Group::Workers);
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    match comm.trim() {
        "beam.smp" => Some(Group::Rabbit),
        "postgres" => {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(db_name) {
                Some(Group::PgBackends)
            } else if ["walwriter", "checkpointer", "background writer"].iter().any(|p| cmdline.contains(p)) {
                Some(Group::PgHelpers)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// (all ticks, steal ticks) of the machine, from the first line of `/proc/stat`: `cpu user nice
/// system idle iowait irq softirq steal guest guest_nice` (guest time is already in user).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

fn parse_machine_ticks(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> =
        line.strip_prefix("cpu ")?.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let all = fields.iter().take(8).sum();
    Some((all, *fields.get(7)?))
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_is_readable() {
        assert!(cpu_secs(std::process::id()).is_some());
    }

    #[test]
    fn steal_comes_from_the_eighth_field() {
        let line = "cpu  197081 0 35928 99878 2426 0 4077 31855 0 0";
        assert_eq!(parse_machine_ticks(line), Some((197081 + 35928 + 99878 + 2426 + 4077 + 31855, 31855)));
        assert!(machine_ticks().is_some());
    }

    #[test]
    fn micros_per_message_math() {
        // 1.5 CPU seconds over 40,000 messages: 37.5 µs each.
        assert!((micros_per_message(1.5, 40_000) - 37.5).abs() < 1e-9);
        assert_eq!(micros_per_message(2.0, 0), 0.0);
        let usage = CpuUsage { worker: 0.4, pg_backends: 0.6, pg_helpers: 0.2, rabbit: 0.1, ..Default::default() };
        let (worker, postgres, rabbit) = usage.per_message(4_000);
        assert!((worker - 100.0).abs() < 1e-9);
        assert!((postgres - 200.0).abs() < 1e-9, "backends and writers together");
        assert!((rabbit - 25.0).abs() < 1e-9);
    }

    #[test]
    fn deltas_go_to_their_component() {
        let snapshot = |own: f64, procs: &[(u32, Group, f64)]| CpuSnapshot {
            procs: procs.iter().map(|(pid, g, s)| (*pid, (*g, *s))).collect(),
            own,
            machine: (1000, 10),
        };
        let before = snapshot(1.0, &[(10, Group::PgBackends, 5.0), (11, Group::Rabbit, 100.0)]);
        let after = snapshot(
            1.5,
            &[
                (10, Group::PgBackends, 5.5),
                (11, Group::Rabbit, 100.25),
                (12, Group::Workers, 0.75),
                (13, Group::PgHelpers, 0.1),
            ],
        );
        let children = before.usage_until(&after, Consumer::Children);
        assert_eq!(
            children,
            CpuUsage {
                worker: 0.75,
                worker_is_bench: false,
                poller: 0.5,
                pg_backends: 0.5,
                pg_helpers: 0.1,
                rabbit: 0.25,
                steal: 0.0
            }
        );
        let in_process = before.usage_until(&snapshot(1.5, &[]), Consumer::InProcess);
        assert_eq!(in_process.worker, 0.5);
        assert!(in_process.worker_is_bench);
        assert_eq!(in_process.poller, 0.0);
    }
}
