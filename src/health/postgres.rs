//! What PostgreSQL knows: parked updates, the last ingest per entry point and the worker
//! instances whose heartbeat is recent.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{EntryPointIngest, WorkerInstance};

/// A worker whose heartbeat is older than this is not listed (it beats every few seconds).
pub const LIVE_WORKER_WINDOW_SECS: f64 = 60.0;

/// Entry points listed at most, the silent (never ingested, longest quiet) first.
const ENTRY_POINTS_LISTED: i64 = 5_000;

#[derive(Default)]
pub struct DbSample {
    pub parked: i64,
    pub last_ingest: Vec<EntryPointIngest>,
    pub workers: Vec<WorkerInstance>,
    pub warnings: Vec<String>,
}

pub async fn sample(pool: &PgPool) -> DbSample {
    let mut out = DbSample::default();
    match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM parked_updates").fetch_one(pool).await {
        Ok(n) => out.parked = n,
        Err(e) => out.warnings.push(format!("parked updates not counted: {e}")),
    }
    match last_ingest(pool).await {
        Ok(rows) => out.last_ingest = rows,
        Err(e) => out.warnings.push(format!("last ingest per entry point not read: {e}")),
    }
    match live_workers(pool).await {
        Ok(rows) => out.workers = rows,
        Err(e) => out.warnings.push(format!("worker instances not read: {e}")),
    }
    out
}

type IngestRow = (uuid::Uuid, String, String, String, Option<DateTime<Utc>>);

/// Every entry point with the last time one of its messages was applied (`None`: never since
/// this was recorded).
pub async fn last_ingest(pool: &PgPool) -> Result<Vec<EntryPointIngest>, sqlx::Error> {
    let rows: Vec<IngestRow> = sqlx::query_as(
        "SELECT e.id, e.project_id, e.channel_type, e.external_channel_id, i.last_ingest_at
           FROM entry_points e LEFT JOIN entry_point_ingest i ON i.entry_point_id = e.id
          ORDER BY i.last_ingest_at NULLS FIRST, e.project_id, e.external_channel_id
          LIMIT $1",
    )
    .bind(ENTRY_POINTS_LISTED)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(entry_point_id, project_id, channel_type, external_channel_id, last_ingest_at)| EntryPointIngest {
            entry_point_id,
            project_id,
            channel_type,
            external_channel_id,
            last_ingest_at,
        })
        .collect())
}

/// Worker instances seen in the last minute, oldest first.
pub async fn live_workers(pool: &PgPool) -> Result<Vec<WorkerInstance>, sqlx::Error> {
    sqlx::query_as(
        "SELECT instance, host, pid, started_at, last_seen_at, batches, messages, dead_lettered,
                avg_batch_size, avg_batch_ms
           FROM worker_instances
          WHERE last_seen_at > now() - make_interval(secs => $1)
          ORDER BY started_at, instance",
    )
    .bind(LIVE_WORKER_WINDOW_SECS)
    .fetch_all(pool)
    .await
}
