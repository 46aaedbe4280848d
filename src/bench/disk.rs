//! Bytes on disk per stored message and per conversation, measured right after the runs (after
//! `VACUUM (ANALYZE)`, so dead tuples of the runs' updates are reclaimable and the statistics
//! are fresh; VACUUM does not shrink files, so this is what the runs left on disk).

use serde_json::json;
use sqlx::PgPool;

use super::report::{bytes, thousands};

/// One table: rows, and bytes in all (`pg_total_relation_size`: heap, TOAST and indexes) and
/// in its indexes (`pg_indexes_size`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct TableSize {
    pub rows: i64,
    pub total: i64,
    pub indexes: i64,
}

impl TableSize {
    /// Heap and TOAST (with their free-space and visibility maps and the TOAST index).
    pub fn table(&self) -> i64 {
        self.total - self.indexes
    }

    /// Bytes per row: (all, heap and TOAST, indexes).
    pub fn per_row(&self) -> (f64, f64, f64) {
        let rows = self.rows.max(1) as f64;
        (self.total as f64 / rows, self.table() as f64 / rows, self.indexes as f64 / rows)
    }

    fn json(&self) -> serde_json::Value {
        let (total, table, indexes) = self.per_row();
        json!({
            "rows": self.rows,
            "bytes": self.total,
            "tableBytes": self.table(),
            "indexBytes": self.indexes,
            "bytesPerRow": total.round(),
            "tableBytesPerRow": table.round(),
            "indexBytesPerRow": indexes.round(),
        })
    }

    fn describe(&self, per: &str) -> String {
        let (total, table, indexes) = self.per_row();
        format!(
            "{} B per {per} (heap+TOAST {} B, indexes {} B) over {} rows = {}",
            thousands(total),
            thousands(table),
            thousands(indexes),
            thousands(self.rows as f64),
            bytes(self.total)
        )
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct DiskUsage {
    pub messages: TableSize,
    pub conversations: TableSize,
    /// (channel type of the entry point, rows, average bytes of the row's values as stored:
    /// `pg_column_size(row)`, compressed where TOAST compressed them)
    pub by_channel: Vec<(String, i64, f64)>,
    pub vacuum_secs: f64,
}

impl DiskUsage {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "measured": "right after the runs, after VACUUM (ANALYZE) messages, conversations",
            "vacuumSeconds": self.vacuum_secs,
            "messages": self.messages.json(),
            "conversations": self.conversations.json(),
            "rowBytesByChannel": self.by_channel.iter().map(|(channel, rows, avg)| {
                (channel.clone(), json!({"rows": rows, "rowBytesAvg": avg.round()}))
            }).collect::<serde_json::Map<_, _>>(),
        })
    }

    pub fn print(&self) {
        println!("disk (right after the runs above, after VACUUM (ANALYZE)):");
        println!("  messages:      {}", self.messages.describe("message"));
        println!("  conversations: {}", self.conversations.describe("conversation"));
        let by_channel = self
            .by_channel
            .iter()
            .map(|(channel, rows, avg)| format!("{channel} {} B × {}", thousands(*avg), thousands(*rows as f64)))
            .collect::<Vec<_>>()
            .join(", ");
        println!("  message row values by channel (pg_column_size, as compressed): {by_channel}");
    }
}

/// Vacuum and measure `messages` and `conversations`.
pub(super) async fn measure(pool: &PgPool) -> anyhow::Result<DiskUsage> {
    let started = std::time::Instant::now();
    for table in ["messages", "conversations"] {
        sqlx::raw_sql(&format!("VACUUM (ANALYZE) {table}")).execute(pool).await?;
    }
    let vacuum_secs = started.elapsed().as_secs_f64();
    let by_channel: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT coalesce(e.channel_type, '(none)'), count(*), coalesce(avg(pg_column_size(m.*)), 0)::float8
           FROM messages m LEFT JOIN entry_points e ON e.id = m.entry_point_id
          GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(DiskUsage {
        messages: size(pool, "messages").await?,
        conversations: size(pool, "conversations").await?,
        by_channel,
        vacuum_secs,
    })
}

/// Rows and sizes of `table` (a fixed name, not input).
pub(super) async fn size(pool: &PgPool, table: &'static str) -> anyhow::Result<TableSize> {
    let (total, indexes, rows): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT pg_total_relation_size('{table}'), pg_indexes_size('{table}'), (SELECT count(*) FROM {table})"
    ))
    .fetch_one(pool)
    .await?;
    Ok(TableSize { rows, total, indexes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_row() {
        let t = TableSize { rows: 1000, total: 3_000_000, indexes: 1_000_000 };
        assert_eq!(t.table(), 2_000_000);
        assert_eq!(t.per_row(), (3000.0, 2000.0, 1000.0));
        assert_eq!(TableSize::default().per_row(), (0.0, 0.0, 0.0), "no rows: no division by zero");
        assert!(t.describe("message").starts_with("3,000 B per message (heap+TOAST 2,000 B, indexes 1,000 B)"));
    }
}
