//! Each worker process's tally and its heartbeat.
//!
//! The worker counts in memory (one short lock per batch, no SQL on the message path): batches,
//! deliveries, dead letters, batch sizes and durations, and the last ingest per entry point.
//! Every few seconds the heartbeat upserts the totals into `worker_instances` and moves
//! `entry_point_ingest` forward; on a clean shutdown it writes the last ingests and deletes its
//! instance row.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often a worker writes its tally by default.
pub const DEFAULT_HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Rows of instances not seen for this long are removed by the others' heartbeats (a worker
/// killed without a clean shutdown leaves its row).
const FORGET_AFTER_SECS: f64 = 3600.0;

/// One worker process's counts since it started.
#[derive(Debug)]
pub struct Tally {
    pub instance: String,
    pub host: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    batches: u64,
    messages: u64,
    dead_lettered: u64,
    batch_ms: f64,
    /// Applied since the last heartbeat wrote them.
    ingest: HashMap<Uuid, DateTime<Utc>>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            instance: Uuid::new_v4().to_string(),
            host: host_name(),
            pid: std::process::id() as i32,
            started_at: Utc::now(),
            counts: Mutex::new(Counts::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch of `size` deliveries was handled in `elapsed`.
    pub fn record_batch(&self, size: usize, elapsed: Duration) {
        let mut c = self.lock();
        c.batches += 1;
        c.messages += size as u64;
        c.batch_ms += elapsed.as_secs_f64() * 1000.0;
    }

    /// Messages of these entry points were applied (committed) now.
    pub fn record_ingest(&self, entry_points: impl IntoIterator<Item = Uuid>) {
        let now = Utc::now();
        let mut c = self.lock();
        for id in entry_points {
            c.ingest.insert(id, now);
        }
    }

    pub fn record_dead_letter(&self) {
        self.lock().dead_lettered += 1;
    }

    /// The totals, and the ingests not yet written (taken out).
    fn take(&self) -> (Counts, HashMap<Uuid, DateTime<Utc>>) {
        let mut c = self.lock();
        let ingest = std::mem::take(&mut c.ingest);
        (c.clone(), ingest)
    }

    /// Put back ingests a failed write did not store (newer ones recorded meanwhile win).
    fn restore(&self, ingest: HashMap<Uuid, DateTime<Utc>>) {
        let mut c = self.lock();
        for (id, at) in ingest {
            let entry = c.ingest.entry(id).or_insert(at);
            *entry = (*entry).max(at);
        }
    }

    /// Write the tally now: the instance row and the ingests recorded since the last write.
    pub async fn write(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let (counts, ingest) = self.take();
        let result = self.write_counts(pool, &counts, &ingest).await;
        if result.is_err() {
            self.restore(ingest);
        }
        result
    }

    async fn write_counts(
        &self,
        pool: &PgPool,
        c: &Counts,
        ingest: &HashMap<Uuid, DateTime<Utc>>,
    ) -> Result<(), sqlx::Error> {
        let batches = c.batches.max(1) as f64;
        sqlx::query(
            "INSERT INTO worker_instances (instance, host, pid, started_at, last_seen_at, batches, messages,
                                           dead_lettered, avg_batch_size, avg_batch_ms)
             VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8, $9)
             ON CONFLICT (instance) DO UPDATE SET last_seen_at = now(), batches = $5, messages = $6,
                 dead_lettered = $7, avg_batch_size = $8, avg_batch_ms = $9",
        )
        .bind(&self.instance)
        .bind(&self.host)
        .bind(self.pid)
        .bind(self.started_at)
        .bind(c.batches as i64)
        .bind(c.messages as i64)
        .bind(c.dead_lettered as i64)
        .bind(c.messages as f64 / batches)
        .bind(c.batch_ms / batches)
        .execute(pool)
        .await?;
        if !ingest.is_empty() {
            let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = ingest.iter().map(|(id, at)| (*id, *at)).unzip();
            // Entry points deleted meanwhile are skipped (the join), not an error.
            sqlx::query(
                "INSERT INTO entry_point_ingest (entry_point_id, last_ingest_at)
                 SELECT k.id, k.at FROM unnest($1::uuid[], $2::timestamptz[]) AS k(id, at)
                   JOIN entry_points e ON e.id = k.id
                 ON CONFLICT (entry_point_id) DO UPDATE
                   SET last_ingest_at = GREATEST(entry_point_ingest.last_ingest_at, EXCLUDED.last_ingest_at)",
            )
            .bind(ids)
            .bind(times)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// Remove this instance's row (clean shutdown).
    pub async fn remove(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM worker_instances WHERE instance = $1").bind(&self.instance).execute(pool).await?;
        Ok(())
    }
}

/// Write `tally` every `every` until `stop`; then write the last ingests and remove the
/// instance row.
pub async fn run(pool: PgPool, tally: std::sync::Arc<Tally>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        match tally.write(&pool).await {
            // Said once per outage, not every few seconds.
            Err(e) if !failing => {
                tracing::warn!(error = %e, "worker heartbeat not written; trying again until it is");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
        let forgotten =
            sqlx::query("DELETE FROM worker_instances WHERE last_seen_at < now() - make_interval(secs => $1)")
                .bind(FORGET_AFTER_SECS)
                .execute(&pool)
                .await;
        if let Err(e) = forgotten {
            tracing::debug!(error = %e, "old worker instances not removed");
        }
    }
    let last = async {
        tally.write(&pool).await?;
        tally.remove(&pool).await
    };
    match tokio::time::timeout(Duration::from_secs(5), last).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "worker instance not removed on shutdown"),
        Err(_) => tracing::warn!("worker instance not removed on shutdown: the database did not answer in 5s"),
    }
}

/// This machine's name (the container's, under Docker).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_and_hands_out_ingests_once() {
        let tally = Tally::new();
        tally.record_batch(10, Duration::from_millis(20));
        tally.record_batch(30, Duration::from_millis(40));
        tally.record_dead_letter();
        let ep = Uuid::new_v4();
        tally.record_ingest([ep, ep]);
        let (c, ingest) = tally.take();
        assert_eq!((c.batches, c.messages, c.dead_lettered), (2, 40, 1));
        assert!((c.batch_ms - 60.0).abs() < 1e-6);
        assert_eq!(ingest.len(), 1);
        assert!(tally.take().1.is_empty());
        tally.restore(ingest);
        assert_eq!(tally.take().1.len(), 1);
        assert!(tally.pid > 0 && !tally.host.is_empty());
    }
}
