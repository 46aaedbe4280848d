//! Ingestion health against the real RabbitMQ (management API, and AMQP alone) and
//! PostgreSQL: queue statistics, dead letters by reason, parked updates, last ingest per entry
//! point, worker heartbeats, and the gauges made from them.

mod common;

use std::time::Duration;

use common::*;
use intake::adapters::ChannelType;
use intake::health::{Overview, Sampler};
use serde_json::json;

/// The management API of the local broker (`.ci/run` enables the plugin).
const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

fn webhook(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": format!("h-{i}"), "conversationKey": "t", "direction": "inbound",
        "body": format!("message {i}")}))
    .unwrap()
}

async fn sample_until(sampler: &Sampler, secs: u64, what: &str, ok: impl Fn(&Overview) -> bool) -> Overview {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let overview = sampler.sample().await;
        if ok(&overview) {
            return overview;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}: {overview:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_from_the_management_api_dead_queue_and_heartbeats() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let shop = db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let quiet = db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "quiet").await;
    // The worker consumes webhooks only: chat messages wait in their queue (lag).
    let worker = start_worker_with(&db.url, &broker, intake::adapters::AdapterRegistry::with_defaults(), |s| {
        s.channel_types = vec![ChannelType::Webhook];
        s.heartbeat_every = Duration::from_millis(200);
    })
    .await;
    for i in 0..3 {
        broker.publish("webhook.webhook", Some("shop"), &webhook(i)).await;
    }
    for i in 3..5 {
        broker.publish("webhook.webhook", Some("nowhere"), &webhook(i)).await;
    }
    for _ in 0..2 {
        broker.publish("chat.slack", Some("C1"), b"{}").await;
    }
    wait_until(30, "messages applied and dead-lettered", || async {
        count(&db.pool, "SELECT count(*) FROM messages").await == 3
            && broker.depth(&broker.topology.dead_queue).await == 2
    })
    .await;
    sqlx::query(
        "INSERT INTO parked_updates (project_id, entry_point_id, idempotency_key, action, action_sha256)
         VALUES ('p', $1, 'slack:C1:1.0', '{\"kind\": \"edit\"}', 'x')",
    )
    .bind(shop)
    .execute(&db.pool)
    .await
    .unwrap();

    let sampler = Sampler::new(db.pool.clone(), AMQP_URL.into(), broker.topology.clone())
        .with_management_url(Some(MANAGEMENT_URL));
    let chat = broker.topology.queue(ChannelType::Chat);
    let webhooks = broker.topology.queue(ChannelType::Webhook);
    // The management API publishes queue statistics every few seconds.
    let overview = sample_until(&sampler, 40, "management statistics of the chat queue", |o| {
        o.queues.iter().any(|q| q.name == chat && q.ready == 2 && q.oldest_age_secs.is_some_and(|a| a >= 1.0))
            && o.queues.iter().any(|q| q.name == webhooks && q.consumers == 1)
            && o.last_ingest.iter().any(|e| e.entry_point_id == shop && e.last_ingest_at.is_some())
            && o.workers.iter().any(|w| w.messages >= 5)
            && o.dead_scanned == 2
    })
    .await;
    assert!(overview.warnings.is_empty(), "{:?}", overview.warnings);
    let chat_stats = overview.queues.iter().find(|q| q.name == chat).unwrap();
    assert_eq!((chat_stats.unacked, chat_stats.consumers), (Some(0), 0));
    assert!(chat_stats.publish_rate.is_some() && chat_stats.deliver_rate.is_some());
    assert_eq!(overview.queues.len(), 4, "three channel queues and the outbound email queue");
    assert_eq!(overview.retry_queues.len(), 4 * broker.topology.retry_delays.len());
    assert_eq!(overview.dead_queue.as_ref().map(|q| q.ready), Some(2));
    assert_eq!(overview.dead_scanned, 2);
    assert_eq!(overview.dead_letters.len(), 1, "{:?}", overview.dead_letters);
    let dead = &overview.dead_letters[0];
    assert_eq!((dead.reason.as_str(), dead.adapter.as_str(), dead.count), ("unknown_entry_point", "webhook", 2));
    assert_eq!(overview.parked, 1);
    let never = overview.last_ingest.iter().find(|e| e.entry_point_id == quiet).unwrap();
    assert_eq!((never.last_ingest_at, never.external_channel_id.as_str()), (None, "quiet"));
    let shop_ingest = overview.last_ingest.iter().find(|e| e.entry_point_id == shop).unwrap();
    assert!(chrono::Utc::now() - shop_ingest.last_ingest_at.unwrap() < chrono::Duration::seconds(60));
    let me = overview.workers.iter().find(|w| w.messages >= 5).unwrap();
    assert_eq!((me.dead_lettered, me.pid), (2, std::process::id() as i32));
    assert!(me.batches >= 1 && me.avg_batch_size >= 1.0, "{me:?}");

    // The scan put every dead letter back.
    wait_until(10, "dead letters back in their queue", || async {
        broker.depth(&broker.topology.dead_queue).await == 2
    })
    .await;

    // The same numbers as gauges.
    let handle = intake::metrics::handle();
    intake::health::gauges::Exported::default().set(&overview);
    let text = handle.render();
    let dead_queue = &broker.topology.dead_queue;
    assert!(text.contains(&format!("intake_queue_depth{{queue=\"{chat}\"}} 2")), "{text}");
    assert!(text.contains(&format!("intake_queue_depth{{queue=\"{dead_queue}\"}} 2")));
    assert!(text.lines().any(|l| l.starts_with(&format!("intake_queue_lag_seconds{{queue=\"{chat}\"}}"))));
    assert!(text.contains("intake_dead_letters{reason=\"unknown_entry_point\",adapter=\"webhook\"} 2"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("intake_entry_point_last_ingest_timestamp_seconds{")
        && l.contains(&format!("entry_point_id=\"{shop}\""))));

    // A clean stop removes the worker's row.
    worker.stop().await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM worker_instances").await, 0);
    sampler.close().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_management_api_queue_depths_come_from_amqp() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    for _ in 0..3 {
        broker.publish("chat.slack", Some("C1"), b"{}").await;
    }
    // Nothing listens on port 1.
    let sampler = Sampler::new(db.pool.clone(), AMQP_URL.into(), broker.topology.clone())
        .with_management_url(Some("http://127.0.0.1:1"));
    let overview = sampler.sample().await;
    let chat = overview.queues.iter().find(|q| q.name == broker.topology.queue(ChannelType::Chat)).unwrap();
    assert_eq!((chat.ready, chat.consumers), (3, 0));
    assert_eq!((chat.unacked, chat.publish_rate, chat.oldest_age_secs), (None, None, None));
    assert_eq!(overview.queues.len(), 4);
    assert_eq!(overview.dead_queue.as_ref().map(|q| q.ready), Some(0));
    assert!(
        overview.warnings.iter().any(|w| w.contains("management") && w.contains("unacked")),
        "{:?}",
        overview.warnings
    );
    assert_eq!((overview.dead_scanned, overview.parked), (0, 0));
    sampler.close().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_queue_scan_is_capped() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    for i in 0..7 {
        let mut headers = lapin::types::FieldTable::default();
        let reason = if i < 5 { "malformed_payload" } else { "database_rejected" };
        headers.insert("x-intake-reason".into(), intake::amqp::long_string(reason));
        headers.insert("x-intake-original-routing-key".into(), intake::amqp::long_string("chat.slack"));
        let properties = lapin::BasicProperties::default().with_headers(headers);
        broker.publisher.publish("", &broker.topology.dead_queue, b"x", properties).await.unwrap();
    }
    let sampler = Sampler::new(db.pool.clone(), AMQP_URL.into(), broker.topology.clone())
        .with_management_url(Some("http://127.0.0.1:1"))
        .with_dead_scan_limit(6);
    let overview = sampler.sample().await;
    assert_eq!(overview.dead_scanned, 6);
    let counted: Vec<(&str, &str, u64)> =
        overview.dead_letters.iter().map(|d| (d.reason.as_str(), d.adapter.as_str(), d.count)).collect();
    assert_eq!(counted, vec![("database_rejected", "slack", 1), ("malformed_payload", "slack", 5)]);
    assert!(overview.warnings.iter().any(|w| w.contains("more than 6")), "{:?}", overview.warnings);
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 7);
    sampler.close().await;
    broker.cleanup().await;
}
