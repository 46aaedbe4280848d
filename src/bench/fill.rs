//! `--big-table N`: the bench database gets N messages already stored (20 per conversation, on
//! the bench's webhook entry points) before an intake run, so the run writes into tables and
//! indexes of production size.
//!
//! The fill is set-based (`INSERT … SELECT … FROM generate_series`, a million rows per
//! statement) and sets only the columns it must; everything else comes from the columns'
//! defaults, so the fill keeps working while the schema grows. Before it starts, it checks that
//! no NOT NULL column without a default was added that it does not set, and names it if so.

use std::time::Instant;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::disk::{self, TableSize};
use super::report::{bytes, thousands};

/// Rows per statement.
const CHUNK: i64 = 1_000_000;
/// Messages per filled conversation.
pub(super) const PER_CONVERSATION: i64 = 20;

/// The columns the fill sets, per table.
const COLUMNS_SET: &[(&str, &[&str])] = &[
    ("conversations", &["id", "project_id", "origin_entry_point_id", "thread_key", "subject", "last_activity_at"]),
    ("conversation_entry_points", &["conversation_id", "entry_point_id", "is_entry_point"]),
    (
        "messages",
        &[
            "id",
            "project_id",
            "conversation_id",
            "entry_point_id",
            "idempotency_key",
            "direction",
            "sender_id",
            "sender_display_name",
            "sender_primary_email",
            "subject",
            "body",
            "metadata",
            "occurred_at",
        ],
    ),
];

#[derive(Debug, Clone)]
pub(super) struct FillResult {
    pub rows: i64,
    pub conversations: i64,
    pub fill_secs: f64,
    pub vacuum_secs: f64,
    /// `messages` after the fill and VACUUM (ANALYZE).
    pub messages: TableSize,
}

impl FillResult {
    pub fn json(&self) -> serde_json::Value {
        let (per_row, _, _) = self.messages.per_row();
        json!({
            "filledMessages": self.rows,
            "filledConversations": self.conversations,
            "fillSeconds": self.fill_secs,
            "vacuumAnalyzeSeconds": self.vacuum_secs,
            "messagesRowsAfterFill": self.messages.rows,
            "messagesBytesAfterFill": self.messages.total,
            "messagesIndexBytesAfterFill": self.messages.indexes,
            "messagesBytesPerRowAfterFill": per_row.round(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "fill: {} messages in {} conversations in {:.1} s ({} rows/s), VACUUM (ANALYZE) {:.1} s; messages then {} rows, {} (indexes {})",
            thousands(self.rows as f64),
            thousands(self.conversations as f64),
            self.fill_secs,
            thousands(self.rows as f64 / self.fill_secs.max(1e-9)),
            self.vacuum_secs,
            thousands(self.messages.rows as f64),
            bytes(self.messages.total),
            bytes(self.messages.indexes)
        )
    }
}

/// Thread keys of filled conversations start with this; the final check leaves them out.
pub(super) const THREAD_PREFIX: &str = "fill-c";

/// Fill `rows` messages over `rows / PER_CONVERSATION` conversations spread over
/// `entry_points` (id, external channel id), then VACUUM (ANALYZE) and CHECKPOINT, so the
/// timed run after it starts clean.
pub(super) async fn fill(
    pool: &PgPool,
    project: &str,
    entry_points: &[(Uuid, String)],
    rows: i64,
    say: impl Fn(String),
) -> anyhow::Result<FillResult> {
    anyhow::ensure!(!entry_points.is_empty(), "the fill needs an entry point");
    check_columns(pool).await?;
    let conversations = (rows / PER_CONVERSATION).max(1);
    let ids: Vec<Uuid> = entry_points.iter().map(|(id, _)| *id).collect();
    let names: Vec<String> = entry_points.iter().map(|(_, name)| name.clone()).collect();
    let started = Instant::now();
    let mut lo = 0;
    while lo < conversations {
        let hi = (lo + CHUNK).min(conversations) - 1;
        sqlx::query(
            "WITH c AS (
               INSERT INTO conversations (id, project_id, origin_entry_point_id, thread_key, subject, last_activity_at)
               SELECT gen_random_uuid(), $1, ($2::uuid[])[(1 + g % $3)::int], $4 || g,
                      'Order #' || (100000 + g % 900000) || ' - where is my parcel?',
                      now() - interval '1 minute' * ($5 - g)
                 FROM generate_series($6::bigint, $7::bigint) g
               RETURNING id, origin_entry_point_id)
             INSERT INTO conversation_entry_points (conversation_id, entry_point_id, is_entry_point)
             SELECT id, origin_entry_point_id, true FROM c",
        )
        .bind(project)
        .bind(&ids)
        .bind(ids.len() as i64)
        .bind(THREAD_PREFIX)
        .bind(conversations)
        .bind(lo)
        .bind(hi)
        .execute(pool)
        .await?;
        lo = hi + 1;
    }
    // Their search entries, as a running worker's refresh would have written them.
    crate::store::search::refresh(pool).await?;
    say(format!(
        "[big table] {} conversations in {:.1} s; filling {} messages…",
        thousands(conversations as f64),
        started.elapsed().as_secs_f64(),
        thousands(rows as f64)
    ));
    let mut lo = 0;
    while lo < rows {
        let hi = (lo + CHUNK).min(rows) - 1;
        // Message g: conversation g % C; every third message of a conversation is the agent's.
        sqlx::query(
            "INSERT INTO messages (id, project_id, conversation_id, entry_point_id, idempotency_key, direction,
                                   sender_id, sender_display_name, sender_primary_email, subject, body, metadata,
                                   occurred_at)
             SELECT gen_random_uuid(), $1, c.id, c.origin_entry_point_id,
                    'webhook:' || ($2::text[])[(1 + c.n % $3)::int] || ':fill-' || g,
                    CASE WHEN g / $4 % 3 = 2 THEN 'outbound' ELSE 'inbound' END,
                    CASE WHEN g / $4 % 3 = 2 THEN 'agent-' || c.n % 7 ELSE 'cust-fill-' || c.n END,
                    CASE WHEN g / $4 % 3 = 2 THEN 'Agent ' || c.n % 7 ELSE 'Customer ' || c.n END,
                    CASE WHEN g / $4 % 3 = 2 THEN NULL ELSE 'customer' || c.n || '@example.com' END,
                    'Order #' || (100000 + c.n % 900000) || ' - where is my parcel?',
                    left(repeat('could you check where my parcel is, the tracking still says ' || md5(g::text) || ' ', 7), 600),
                    jsonb_build_object('source', 'shop', 'orderId', 100000 + c.n % 900000, 'locale', 'en-GB',
                                       'priority', CASE WHEN c.n % 5 = 0 THEN 'high' ELSE 'normal' END),
                    now() - interval '3 seconds' * ($5 - g)
               FROM generate_series($6::bigint, $7::bigint) g
               JOIN (SELECT id, origin_entry_point_id, substr(thread_key, length($8) + 1)::bigint AS n
                       FROM conversations WHERE starts_with(thread_key, $8)) c ON c.n = g % $4",
        )
        .bind(project)
        .bind(&names)
        .bind(names.len() as i64)
        .bind(conversations)
        .bind(rows)
        .bind(lo)
        .bind(hi)
        .bind(THREAD_PREFIX)
        .execute(pool)
        .await?;
        lo = hi + 1;
        say(format!(
            "[big table] {} / {} messages ({:.0} s)",
            thousands(lo as f64),
            thousands(rows as f64),
            started.elapsed().as_secs_f64()
        ));
    }
    let fill_secs = started.elapsed().as_secs_f64();
    say("[big table] VACUUM (ANALYZE)…".into());
    let vacuum = Instant::now();
    for table in ["messages", "conversations", "conversation_entry_points"] {
        sqlx::raw_sql(&format!("VACUUM (ANALYZE) {table}")).execute(pool).await?;
    }
    let vacuum_secs = vacuum.elapsed().as_secs_f64();
    // Write the fill's dirty pages now rather than during the timed run (needs superuser or
    // pg_checkpoint; without them the run may share the machine with a checkpoint).
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(pool).await {
        say(format!("[big table] CHECKPOINT refused ({e}); the run may overlap a checkpoint"));
    }
    let messages = disk::size(pool, "messages").await?;
    Ok(FillResult { rows, conversations, fill_secs, vacuum_secs, messages })
}

/// NOT NULL columns without a default that the fill does not set (the schema changed).
async fn check_columns(pool: &PgPool) -> anyhow::Result<()> {
    let tables: Vec<&str> = COLUMNS_SET.iter().map(|(t, _)| *t).collect();
    let required: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = ANY($1)
            AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO' AND is_generated = 'NEVER'",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await?;
    let missing = unset_columns(&required);
    anyhow::ensure!(
        missing.is_empty(),
        "the schema changed: the big-table fill does not set the NOT NULL column(s) without a default {}; \
         add them to src/bench/fill.rs",
        missing.join(", ")
    );
    Ok(())
}

/// `table.column` of each required column the fill does not set.
fn unset_columns(required: &[(String, String)]) -> Vec<String> {
    required
        .iter()
        .filter(|(table, column)| {
            !COLUMNS_SET.iter().any(|(t, columns)| t == table && columns.contains(&column.as_str()))
        })
        .map(|(table, column)| format!("{table}.{column}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_columns_the_fill_does_not_set_are_named() {
        let required = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(t, c)| (t.to_string(), c.to_string())).collect()
        };
        assert!(unset_columns(&required(&[("messages", "body"), ("conversations", "project_id")])).is_empty());
        assert_eq!(
            unset_columns(&required(&[("messages", "body"), ("conversations", "channel_kind")])),
            vec!["conversations.channel_kind"]
        );
    }
}
