//! The store-only baseline: the broker and PostgreSQL with no domain logic. It consumes the
//! webhook backlog as intake does (the same prefetch, batches of DEFAULT_BATCH, two batches in
//! flight, one `multiple` ack per batch in delivery order) and stores each delivery durably and
//! deduplicated: one set-based INSERT per batch into a table shaped like the core of `messages`
//! (uuid v7 key, the idempotency key unique per project, the conversation index), committed
//! before the ack. No conversation, customer, preview or search work: what is left of intake's
//! cost when those are taken away, so intake's distance from it is the cost of its logic.

use std::time::Instant;

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::baselines::next_delivery;
use super::cpu::{Consumer, CpuSnapshot};
use super::{Bench, RunResult, DEFAULT_BATCH};
use crate::amqp::worker::MAX_BATCHES_IN_FLIGHT;
use crate::store;

const TABLE: &str = "CREATE TABLE bench_store_only (
    id              uuid PRIMARY KEY,
    project_id      text NOT NULL,
    conversation    text NOT NULL,
    idempotency_key text NOT NULL,
    payload         text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, idempotency_key)
)";
const INDEX: &str = "CREATE INDEX bench_store_only_conversation_idx
    ON bench_store_only (conversation, occurred_at, idempotency_key)";

/// What the store-only consumer reads of a webhook payload.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Keys {
    id: String,
    conversation_key: String,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

/// One batch's rows, column by column.
#[derive(Default)]
struct Rows {
    keys: Vec<String>,
    conversations: Vec<String>,
    payloads: Vec<String>,
    times: Vec<chrono::DateTime<chrono::Utc>>,
}

async fn store(pool: PgPool, rows: Rows) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = rows.keys.iter().map(|_| Uuid::now_v7()).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO bench_store_only (id, project_id, conversation, idempotency_key, payload, occurred_at)
         SELECT id, 'bench', c, k, p, t FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
             AS u (id, c, k, p, t)
         ON CONFLICT (project_id, idempotency_key) DO NOTHING",
    )
    .bind(&ids)
    .bind(&rows.conversations)
    .bind(&rows.keys)
    .bind(&rows.payloads)
    .bind(&rows.times)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

impl Bench {
    pub(super) async fn run_store_only(&mut self, n: usize) -> anyhow::Result<RunResult> {
        let name = "store-only (broker + PostgreSQL)";
        self.say(format!("[store-only] publishing {n}…"));
        let (_, messages) = self.webhook_backlog(n, self.args.conversations);
        let payload_bytes = messages.iter().map(|m| m.body.len()).sum::<usize>() / n.max(1);
        let publish_secs = self.publish_backlog(messages).await?;
        sqlx::query(TABLE).execute(&self.subject.pool).await?;
        sqlx::query(INDEX).execute(&self.subject.pool).await?;
        self.say(format!("[store-only] consuming {n}: one INSERT and commit per batch, then one ack…"));
        let pool = store::connect(&self.subject.db_url, 2).await?;
        let before = CpuSnapshot::take(&self.subject.db_name, &[]);
        let (channel, mut consumer) = self.consume_backlog().await?;
        let mut in_flight = FuturesOrdered::new();
        let mut rows = Rows::default();
        let mut first = None;
        let mut seen = 0;
        while seen < n {
            let delivery = next_delivery(&mut consumer, "store-only").await?;
            first.get_or_insert_with(Instant::now);
            seen += 1;
            let keys: Keys = serde_json::from_slice(&delivery.data)?;
            rows.keys.push(keys.id);
            rows.conversations.push(keys.conversation_key);
            rows.payloads.push(String::from_utf8(delivery.data)?);
            rows.times.push(keys.occurred_at);
            if seen % DEFAULT_BATCH == 0 || seen == n {
                // As many batches in the database as intake has: the next one is gathered while
                // they run.
                while in_flight.len() >= MAX_BATCHES_IN_FLIGHT {
                    let (stored, tag) = in_flight.next().await.expect("not empty");
                    stored??;
                    channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
                }
                let tag = delivery.delivery_tag;
                let task = tokio::spawn(store(pool.clone(), std::mem::take(&mut rows)));
                in_flight.push_back(async move { (task.await, tag) });
            }
        }
        while let Some((stored, tag)) = in_flight.next().await {
            stored??;
            channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
        }
        let consume_secs = first.expect("n >= 1").elapsed().as_secs_f64();
        let cpu = before.usage_until(&CpuSnapshot::take(&self.subject.db_name, &[]), Consumer::InProcess);
        channel.close(200, "done".into()).await?;
        pool.close().await;
        // Closing requeues whatever was not acked: the queue must be empty.
        let left = self.ready().await?;
        anyhow::ensure!(left == 0, "[store-only] {left} message(s) back in the queue: not all were acked");
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM bench_store_only").fetch_one(&self.subject.pool).await?;
        anyhow::ensure!(stored == n as i64, "[store-only] {stored} rows stored, expected {n}");
        sqlx::query("DROP TABLE bench_store_only").execute(&self.subject.pool).await?;
        let r = RunResult {
            key: "storeOnlyBaseline".into(),
            name: name.into(),
            messages: n,
            payload_bytes,
            publish_secs,
            consume_secs,
            cpu,
            workers: 1,
            batch_size: Some(DEFAULT_BATCH),
            applied: Some(stored),
        };
        self.say(format!("[store-only] {:.0} msg/s", r.rate()));
        Ok(r)
    }
}
