//! The paced latency run: publish -> commit through one default worker at a share of the
//! measured rate, seen through `NOTIFY` from a trigger the bench adds to its own database
//! (PostgreSQL delivers it when the worker's transaction commits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;

use super::workers::stop_workers;
use intake_adapters::ChannelType;

use super::report::LatencyResult;
use super::Bench;
use crate::amqp::envelope;
use crate::amqp::publish::new_message_properties;

const NOTIFY_CHANNEL: &str = "intake_bench_commit";

/// The start of the paced run reported apart: the new worker process opens its database
/// connections and the run's conversations are all created in its first second, a backlog
/// that steady traffic never has.
pub(super) const SETTLE: Duration = Duration::from_secs(2);

impl Bench {
    pub(super) async fn run_latency(&mut self, rate: f64) -> anyhow::Result<LatencyResult> {
        let rate = rate.max(1.0);
        let count = ((rate * self.args.latency_secs as f64) as usize).max(1);
        self.say(format!("[latency] {count} messages paced at {rate:.0} msg/s through one default worker…"));
        let (run, messages) = self.webhook_backlog(count, self.args.conversations);
        sqlx::query(&format!(
            "CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', regexp_replace(NEW.idempotency_key, '^webhook:[^:]*:', ''));
             RETURN NULL; END $$"
        ))
        .execute(&self.subject.pool)
        .await?;
        sqlx::query(
            "CREATE TRIGGER bench_notify AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION bench_notify()",
        )
        .execute(&self.subject.pool)
        .await?;
        let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.subject.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        let prefix = format!("r{run}-");
        let listening = {
            let committed = committed.clone();
            tokio::spawn(async move {
                while let Ok(n) = listener.recv().await {
                    let at = Instant::now();
                    if n.payload().starts_with(&prefix) {
                        committed.lock().expect("lock").insert(n.payload().to_owned(), at);
                    }
                }
            })
        };
        let child = self.spawn_worker(None)?;
        let spawn = Instant::now();
        while self.queue_state(&self.topology.queue(ChannelType::Webhook)).await?.1 == 0 {
            anyhow::ensure!(spawn.elapsed() < Duration::from_secs(60), "[latency] worker did not start consuming");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        // Paced publishing; confirms are checked by a separate task so they do not hold the pace.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<lapin::PublisherConfirm>();
        let confirms = tokio::spawn(async move {
            let mut bad = 0usize;
            while let Some(c) = rx.recv().await {
                match c.await {
                    Ok(c) if c.is_ack() => {
                        if c.take_message().is_some() {
                            bad += 1;
                        }
                    }
                    _ => bad += 1,
                }
            }
            bad
        });
        let mut published: Vec<(String, Instant)> = Vec::with_capacity(count);
        let server_before = self.server_counters().await?;
        let started = Instant::now();
        let channel = self.publisher.channel();
        for (i, message) in messages.into_iter().enumerate() {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            let props = new_message_properties(
                &format!("bench-{}-{i}", self.id),
                message.kind.content_type(),
                [(envelope::ADAPTER, message.kind.adapter_key().to_owned())],
            );
            published.push((format!("r{run}-{i:06}"), Instant::now()));
            let confirm = channel
                .basic_publish(
                    self.topology.exchange.as_str().into(),
                    message.routing_key().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &message.body,
                    props.with_delivery_mode(2),
                )
                .await?;
            let _ = tx.send(confirm);
        }
        let publish_secs = started.elapsed().as_secs_f64();
        drop(tx);
        let bad = confirms.await?;
        anyhow::ensure!(bad == 0, "[latency] {bad} publish(es) not confirmed");
        let target = self.subject.expected_rows + count as i64;
        let wait = Instant::now();
        while committed.lock().expect("lock").len() < count {
            anyhow::ensure!(
                wait.elapsed() < Duration::from_secs(60),
                "[latency] only {} of {count} commits seen",
                committed.lock().expect("lock").len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let server_after = self.server_counters().await?;
        stop_workers(vec![child]).await?;
        listening.abort();
        sqlx::query("DROP TRIGGER bench_notify ON messages").execute(&self.subject.pool).await?;
        sqlx::query("DROP FUNCTION bench_notify()").execute(&self.subject.pool).await?;
        self.subject.expected_rows = target;
        let rows = self.rows().await?;
        anyhow::ensure!(rows == target, "[latency] {rows} rows, expected {target}");

        let committed = committed.lock().expect("lock");
        let timed: Vec<(Duration, f64)> = published
            .iter()
            .filter_map(|(key, at)| {
                committed.get(key).map(|c| (at.duration_since(started), c.duration_since(*at).as_secs_f64() * 1000.0))
            })
            .collect();
        anyhow::ensure!(timed.len() == count, "[latency] {} of {count} keys matched", timed.len());
        if let Some(path) = &self.args.latency_timeline {
            write_timeline(path, started, &timed)?;
        }
        let mut latencies: Vec<f64> = timed.iter().map(|(_, ms)| *ms).collect();
        latencies.sort_by(f64::total_cmp);
        let mut settled: Vec<f64> = timed.iter().filter(|(at, _)| *at >= SETTLE).map(|(_, ms)| *ms).collect();
        settled.sort_by(f64::total_cmp);
        if settled.is_empty() {
            settled = latencies.clone();
        }
        let r = LatencyResult {
            target_rate: rate,
            achieved_rate: count as f64 / publish_secs.max(1e-9),
            messages: count,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: *latencies.last().expect("count >= 1"),
            settled_p50_ms: percentile(&settled, 0.50),
            settled_p99_ms: percentile(&settled, 0.99),
            checkpoints: server_after.0 - server_before.0,
            wal_bytes_per_message: (server_after.1 - server_before.1) / count as f64,
        };
        self.say(format!(
            "[latency] p50 {:.1} ms, p99 {:.1} ms; after the first {} s: p50 {:.1} ms, p99 {:.1} ms",
            r.p50_ms,
            r.p99_ms,
            SETTLE.as_secs(),
            r.settled_p50_ms,
            r.settled_p99_ms
        ));
        Ok(r)
    }

    /// Checkpoints started so far and the WAL position, server-wide.
    async fn server_counters(&self) -> Result<(i64, f64), sqlx::Error> {
        sqlx::query_as(
            "SELECT checkpoints_timed + checkpoints_req, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8
               FROM pg_stat_bgwriter",
        )
        .fetch_one(&self.subject.pool)
        .await
    }
}

/// `--latency-timeline`: the run's start (Unix seconds), then `published_ms,latency_ms` per message.
fn write_timeline(path: &std::path::Path, started: Instant, timed: &[(Duration, f64)]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let mut out =
        format!("# started at unix {:.3}\npublished_ms,latency_ms\n", (now - started.elapsed()).as_secs_f64());
    for (at, ms) in timed {
        writeln!(out, "{:.1},{ms:.1}", at.as_secs_f64() * 1000.0)?;
    }
    std::fs::write(path, out).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
