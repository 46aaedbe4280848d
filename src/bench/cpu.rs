//! CPU seconds of the processes that take part, from `/proc/<pid>/stat`.

use std::collections::{HashMap, HashSet};

/// CPU seconds by group of processes.
pub(super) type CpuUsage = Vec<(String, f64)>;

/// `/proc/<pid>/stat` counts CPU time in clock ticks; USER_HZ is 100 on Linux.
const CLOCK_TICKS: f64 = 100.0;
/// CPU seconds of the processes that take part, by group.
pub(super) struct CpuSnapshot {
    procs: HashMap<u32, (String, f64)>,
    own: f64,
}

impl CpuSnapshot {
    pub(super) fn take(db_name: &str, workers: &[u32]) -> Self {
        let mut procs = HashMap::new();
        let workers: HashSet<u32> = workers.iter().copied().collect();
        let own = std::process::id();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let group = if workers.contains(&pid) {
                    "intake worker(s)".to_owned()
                } else {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let comm = comm.trim();
                    if comm == "beam.smp" {
                        "rabbitmq beam.smp".to_owned()
                    } else if comm == "postgres" {
                        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        let cmdline = String::from_utf8_lossy(&cmdline);
                        if cmdline.contains(db_name) {
                            "postgres backends".to_owned()
                        } else if ["walwriter", "checkpointer", "background writer"].iter().any(|p| cmdline.contains(p))
                        {
                            "postgres wal/bg writers".to_owned()
                        } else {
                            continue;
                        }
                    } else {
                        continue;
                    }
                };
                if let Some(secs) = cpu_secs(pid) {
                    procs.insert(pid, (group, secs));
                }
            }
        }
        CpuSnapshot { procs, own: cpu_secs(own).unwrap_or(0.0) }
    }

    /// CPU seconds per group between `self` and `later` (processes that started in between
    /// count from zero).
    pub(super) fn delta(&self, later: &CpuSnapshot, own_label: &str) -> Vec<(String, f64)> {
        let mut groups: Vec<(String, f64)> = Vec::new();
        let mut add = |g: &str, v: f64| match groups.iter_mut().find(|(k, _)| k == g) {
            Some((_, total)) => *total += v,
            None => groups.push((g.to_owned(), v)),
        };
        for order in ["intake worker(s)", "postgres backends", "postgres wal/bg writers", "rabbitmq beam.smp"] {
            add(order, 0.0);
        }
        add(own_label, (later.own - self.own).max(0.0));
        for (pid, (group, secs)) in &later.procs {
            let before = self.procs.get(pid).map(|(_, s)| *s).unwrap_or(0.0);
            add(group, (secs - before).max(0.0));
        }
        groups
    }
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
}
