//! The exactly-once check: every published message is one row, every conversation shows its
//! newest message, and nothing was dead-lettered or left in a queue.

use serde_json::json;

use super::fill::THREAD_PREFIX;
use super::report::thousands;
use super::workers::RowScope;
use super::Bench;
use crate::amqp::dlq;

#[derive(Debug, Clone, Default)]
pub(super) struct CheckResult {
    /// Rows of the runs before any fill, and their distinct idempotency keys.
    pub rows: i64,
    pub distinct: i64,
    /// Messages published to intake or the naive consumer before any fill.
    pub expected: i64,
    /// The big-table run: rows it added, their distinct keys, and the table's rows in all.
    pub big: Option<(i64, i64, i64)>,
}

impl CheckResult {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "rowsExpected": self.expected,
            "rows": self.rows,
            "distinctKeys": self.distinct,
            "bigTableRun": self.big.map(|(rows, distinct, total)| json!({"rows": rows, "distinctKeys": distinct, "tableRows": total})),
            "exactlyOnce": true,
            "deadLettered": 0,
        })
    }

    pub fn print(&self) {
        println!(
            "check: {} rows, {} distinct idempotency keys, {} messages published to consumers that store into `messages`: every message applied exactly once; every conversation shows its newest message; dead queue and all queues empty",
            thousands(self.rows as f64),
            thousands(self.distinct as f64),
            thousands(self.expected as f64)
        );
        if let Some((rows, distinct, total)) = self.big {
            println!(
                "       big-table run: {} rows, {} distinct keys; the table holds {} rows with the fill",
                thousands(rows as f64),
                thousands(distinct as f64),
                thousands(total as f64)
            );
        }
    }
}

impl Bench {
    /// The runs so far (none of them a fill) stored every message once.
    pub(super) async fn final_check(&self) -> anyhow::Result<CheckResult> {
        let (rows, distinct) = self.stored_once().await?;
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM conversations c
              WHERE NOT starts_with(coalesce(c.thread_key, ''), $1)
                AND c.last_message_at IS DISTINCT FROM (SELECT max(occurred_at) FROM messages m WHERE m.conversation_id = c.id)",
        )
        .bind(THREAD_PREFIX)
        .fetch_one(&self.subject.pool)
        .await?;
        anyhow::ensure!(behind == 0, "{behind} conversation(s) behind their newest message");
        self.queues_empty().await?;
        Ok(CheckResult { rows, distinct, expected: self.subject.expected_rows, big: None })
    }

    /// `messages` holds the rows the runs so far stored, each key once: (rows, distinct keys).
    pub(super) async fn stored_once(&self) -> anyhow::Result<(i64, i64)> {
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT (project_id, idempotency_key)) FROM messages")
                .fetch_one(&self.subject.pool)
                .await?;
        anyhow::ensure!(rows == self.subject.expected_rows, "{rows} rows, expected {}", self.subject.expected_rows);
        anyhow::ensure!(distinct == rows, "{rows} rows but {distinct} distinct keys");
        Ok((rows, distinct))
    }

    /// The big-table run stored its `n` messages once, in conversations of its own that show
    /// their newest message; the table holds the fill and every run. Returns (rows, distinct
    /// keys, table rows).
    pub(super) async fn check_big_run(&self, scope: &RowScope, n: usize) -> anyhow::Result<(i64, i64, i64)> {
        let RowScope::Run { entry_points, keys } = scope else {
            anyhow::bail!("the big-table run counts its own rows")
        };
        let (rows, distinct, behind): (i64, i64, i64) = sqlx::query_as(
            "WITH c AS (SELECT c.id, c.last_message_at FROM conversations c
                          JOIN unnest($1::uuid[], $2::text[]) AS k(ep, key)
                            ON c.origin_entry_point_id = k.ep AND c.thread_key = k.key
                         WHERE c.thread_key IS NOT NULL)
             SELECT (SELECT count(*) FROM messages WHERE conversation_id IN (SELECT id FROM c)),
                    (SELECT count(DISTINCT idempotency_key) FROM messages WHERE conversation_id IN (SELECT id FROM c)),
                    (SELECT count(*) FROM c WHERE c.last_message_at IS DISTINCT FROM
                       (SELECT max(occurred_at) FROM messages m WHERE m.conversation_id = c.id))",
        )
        .bind(entry_points)
        .bind(keys)
        .fetch_one(&self.subject.pool)
        .await?;
        anyhow::ensure!(
            rows == n as i64 && distinct == rows,
            "[big table] {rows} rows, {distinct} distinct keys, expected {n}"
        );
        anyhow::ensure!(behind == 0, "[big table] {behind} conversation(s) behind their newest message");
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&self.subject.pool).await?;
        let expected = self.subject.expected_rows + self.fill_rows + n as i64;
        anyhow::ensure!(total == expected, "[big table] the table holds {total} rows, expected {expected}");
        self.queues_empty().await?;
        Ok((rows, distinct, total))
    }

    /// Every queue of the bench is empty (the dead queue included).
    async fn queues_empty(&self) -> anyhow::Result<()> {
        self.no_dead_letters("check").await?;
        for q in self.topology.all_queues() {
            let depth = self.queue_state(&q).await?.0;
            anyhow::ensure!(depth == 0, "queue `{q}` still holds {depth} message(s)");
        }
        Ok(())
    }

    /// Fail, naming why, when anything was dead-lettered.
    pub(super) async fn no_dead_letters(&self, run: &str) -> anyhow::Result<()> {
        let dead = self.queue_state(&self.topology.dead_queue).await?.0;
        if dead == 0 {
            return Ok(());
        }
        let channel = self.connection.create_channel().await?;
        let letters = dlq::list(&channel, &self.topology.dead_queue, 5).await?;
        let _ = channel.close(200, "listed".into()).await;
        let reasons: Vec<String> = letters
            .iter()
            .map(|d| {
                format!(
                    "{} ({}, message {}): {}",
                    d.reason,
                    d.routing_key,
                    d.message_id.as_deref().unwrap_or("?"),
                    d.error
                )
            })
            .collect();
        anyhow::bail!("[{run}] {dead} message(s) dead-lettered; the first: {}", reasons.join("; "))
    }
}
