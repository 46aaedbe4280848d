//! Parked updates: an edit, delete or delivery status whose message has not arrived (a status
//! that overtook its message, an edit of a message another tool sent) waits in
//! `parked_updates` instead of holding its delivery, and its siblings, in the retry path. It is
//! applied in the transaction that inserts its message; the worker's sweeper applies what a
//! race left behind and expires what waited too long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use intake_adapters::UpdateAction;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{action_key, change_message, lock_conversation};

/// Keep `action` until its message arrives. Parking the same update twice keeps one.
pub(super) async fn park(
    conn: &mut PgConnection,
    project: &str,
    entry_point_id: Uuid,
    action: &UpdateAction,
) -> Result<(), sqlx::Error> {
    let json = serde_json::to_value(action).expect("actions serialize");
    let sha = hex::encode(Sha256::digest(json.to_string().as_bytes()));
    let key = action_key(action);
    sqlx::query(
        "INSERT INTO parked_updates (project_id, entry_point_id, idempotency_key, action, action_sha256)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(project)
    .bind(entry_point_id)
    .bind(key)
    .bind(json)
    .bind(sha)
    .execute(conn)
    .await?;
    tracing::info!(project, key, "update parked until its message arrives");
    Ok(())
}

/// Apply (in parking order) and remove what waited for these just-inserted messages:
/// `(project, idempotency key, message id, conversation id)`, conversations locked by the
/// caller's transaction.
pub(super) async fn unpark(conn: &mut PgConnection, messages: &[(&str, &str, Uuid, Uuid)]) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    // A delivery status waits for an outbound message only (an inbound one reusing the key is
    // not what it is about).
    let rows: Vec<(i64, String, String, serde_json::Value)> = sqlx::query_as(
        "DELETE FROM parked_updates p
          USING unnest($1::text[], $2::text[], $3::uuid[]) AS k(project, key, message)
                JOIN messages m ON m.id = k.message
          WHERE p.project_id = k.project AND p.idempotency_key = k.key
            AND (p.action->>'kind' <> 'status' OR m.direction = 'outbound')
         RETURNING p.id, p.project_id, p.idempotency_key, p.action",
    )
    .bind(messages.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.2).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut rows = rows;
    rows.sort_by_key(|r| r.0);
    for (_, project, key, json) in rows {
        let Some(&(_, _, message_id, conversation_id)) = messages.iter().find(|m| m.0 == project && m.1 == key) else {
            continue;
        };
        apply_parked(conn, message_id, conversation_id, &key, json).await?;
    }
    Ok(())
}

async fn apply_parked(
    conn: &mut PgConnection,
    message_id: Uuid,
    conversation_id: Uuid,
    key: &str,
    json: serde_json::Value,
) -> Result<(), sqlx::Error> {
    match serde_json::from_value::<UpdateAction>(json) {
        Ok(action) => {
            change_message(conn, message_id, conversation_id, &action).await?;
            metrics::counter!("intake_parked_applied_total").increment(1);
            tracing::info!(key, "parked update applied");
        }
        // Written by an intake whose update shape has since changed: nothing to apply.
        Err(e) => tracing::warn!(key, error = %e, "parked update unreadable; dropped"),
    }
    Ok(())
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Parked updates whose message had arrived (a race with the insert).
    pub applied: u64,
    /// Removed: waited longer than the maximum age.
    pub expired: u64,
    /// Still waiting.
    pub waiting: i64,
    /// Age of the oldest one still waiting.
    pub oldest_age: Option<Duration>,
}

/// Apply parked updates whose message is there after all, expire those older than `max_age`,
/// and report (and export as metrics) what still waits. Safe to run from several workers.
pub async fn sweep_parked(pool: &PgPool, max_age: Duration) -> Result<SweepReport, sqlx::Error> {
    let mut report = SweepReport::default();
    // Leftovers of a race are young (the sweep runs every few seconds): only recent rows are
    // looked at, through the age index, so statuses waiting for days cost nothing here.
    let ready: Vec<(i64, String, Uuid, Uuid)> = sqlx::query_as(
        "SELECT p.id, p.project_id, m.id, m.conversation_id FROM parked_updates p
           JOIN messages m ON m.project_id = p.project_id AND m.idempotency_key = p.idempotency_key
          WHERE p.parked_at > now() - interval '1 hour'
            AND (p.action->>'kind' <> 'status' OR m.direction = 'outbound')
          ORDER BY p.id LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    for (id, project, message_id, conversation_id) in ready {
        let mut tx = pool.begin().await?;
        if lock_conversation(&mut tx, &project, conversation_id).await.is_err() {
            continue;
        }
        let row: Option<(String, serde_json::Value)> =
            sqlx::query_as("DELETE FROM parked_updates WHERE id = $1 RETURNING idempotency_key, action")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((key, json)) = row {
            apply_parked(&mut tx, message_id, conversation_id, &key, json).await?;
            report.applied += 1;
        }
        tx.commit().await?;
    }
    let max_age_secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX).min(100 * 365 * 86400);
    let expired: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "DELETE FROM parked_updates WHERE parked_at < now() - make_interval(secs => $1)
         RETURNING project_id, idempotency_key, action->>'kind'",
    )
    .bind(max_age_secs as f64)
    .fetch_all(pool)
    .await?;
    for (project, key, kind) in &expired {
        tracing::warn!(project, key, kind, "parked update expired: its message never arrived");
    }
    report.expired = expired.len() as u64;
    metrics::counter!("intake_parked_expired_total").increment(report.expired);
    let (waiting, oldest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), min(parked_at) FROM parked_updates").fetch_one(pool).await?;
    report.waiting = waiting;
    report.oldest_age = oldest.map(|at| (Utc::now() - at).to_std().unwrap_or_default());
    metrics::gauge!("intake_parked_updates").set(waiting as f64);
    metrics::gauge!("intake_parked_oldest_age_seconds")
        .set(report.oldest_age.map(|a| a.as_secs_f64()).unwrap_or_default());
    Ok(report)
}

/// A parked update, for `intake parked list`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ParkedView {
    pub project_id: String,
    pub entry_point_id: Option<Uuid>,
    pub idempotency_key: String,
    pub kind: Option<String>,
    pub parked_at: DateTime<Utc>,
}

/// Parked updates, oldest first.
pub async fn list_parked(pool: &PgPool, limit: i64) -> Result<Vec<ParkedView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT project_id, entry_point_id, idempotency_key, action->>'kind' AS kind, parked_at
           FROM parked_updates ORDER BY parked_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
