//! The scenarios after the standard runs, each against the same fast baseline: real-size
//! traffic of every channel (`mix`), all traffic on one conversation (`hot`), and a big table
//! (`--big-table N`).

use super::check::CheckResult;
use super::fill::{self, FillResult};
use super::payloads::{entry_point_name, mix_message, webhook_conversation_key, BenchMessage, MixStats};
use super::report::{thousands, RunResult};
use super::workers::RowScope;
use super::{Bench, PROJECT};

impl Bench {
    /// `n` messages of the real-size mix through one default worker.
    pub(super) async fn run_mix(&mut self, n: usize, key: &str, name: &str) -> anyhow::Result<(RunResult, MixStats)> {
        let run = self.next_run;
        self.next_run += 1;
        let seed = self.args.mix_seed;
        let (conversations, entry_points) = (self.args.conversations, self.args.entry_points);
        let messages: Vec<BenchMessage> =
            (0..n).map(|i| mix_message(seed, run, i, conversations, entry_points)).collect();
        let stats = MixStats::of(seed, &messages);
        self.say(format!("[mix] {n} messages, avg {} B: {}", thousands(stats.average() as f64), stats.describe()));
        let r = self.drain(key, name, messages, 1, None, &RowScope::Table).await?;
        Ok((r, stats))
    }

    /// `n` webhooks on one conversation (one conversationKey on one entry point), one default
    /// worker.
    pub(super) async fn run_hot(&mut self, n: usize) -> anyhow::Result<RunResult> {
        let (_, messages) = self.webhook_backlog(n, 1);
        self.drain("hot", "hot (1 conversation, 1 worker)", messages, 1, None, &RowScope::Table).await
    }

    /// Fill `rows` messages, then `n` webhooks spread as in the intake run, one default worker.
    pub(super) async fn run_big_table(
        &mut self,
        rows: u64,
        n: usize,
        check: &mut CheckResult,
    ) -> anyhow::Result<(RunResult, FillResult)> {
        self.say(format!("[big table] filling {} messages…", thousands(rows as f64)));
        let filled = fill::fill(&self.subject.pool, PROJECT, &self.subject.webhook_entry_points, rows as i64, |line| {
            self.say(line)
        });
        let filled = filled.await?;
        self.fill_rows = filled.rows;
        self.say(filled.describe());
        let (run, messages) = self.webhook_backlog(n, self.args.conversations);
        let conversations = n.min(self.args.conversations);
        let scope = RowScope::Run {
            entry_points: (0..conversations)
                .map(|c| self.subject.webhook_entry_points[c % self.subject.webhook_entry_points.len()].0)
                .collect(),
            keys: (0..conversations).map(|c| webhook_conversation_key(run, c)).collect(),
        };
        debug_assert!(self
            .subject
            .webhook_entry_points
            .iter()
            .enumerate()
            .all(|(i, (_, name))| *name == entry_point_name(i)));
        let name = format!("big table (+{} rows, 1 worker)", thousands(rows as f64));
        let r = self.drain("bigTable", &name, messages, 1, None, &scope).await?;
        check.big = Some(self.check_big_run(&scope, n).await?);
        Ok((r, filled))
    }
}
