//! The queue worker against the real RabbitMQ and PostgreSQL: happy paths, duplicates, dead
//! letters and replay, retries, a database outage, graceful shutdown and competing workers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use intake::adapters::webhook::GenericWebhookAdapter;
use intake::adapters::{
    AdapterError, AdapterRegistry, ChannelAdapter, ChannelType, Delivery, NormalizedUpdate, ThreadRef, UpdateAction,
};
use intake::amqp::dlq::Selection;
use intake::amqp::worker::WorkerSettings;
use intake::store;
use serde_json::json;
use sqlx::PgPool;

/// Emits an edit of the message whose key is the body: exercises the retry path, since an
/// edit can arrive before the message it edits.
struct EditAdapter;

#[async_trait]
impl ChannelAdapter for EditAdapter {
    fn channel_type(&self) -> ChannelType {
        ChannelType::Chat
    }
    fn adapter_key(&self) -> &str {
        "edits"
    }
    async fn decode(&self, d: &Delivery<'_>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        Ok(vec![NormalizedUpdate {
            external_channel_id: None,
            fallback_channel_ids: vec![],
            thread: ThreadRef::default(),
            action: UpdateAction::Edit {
                idempotency_key: String::from_utf8_lossy(d.body).into_owned(),
                body: "edited".into(),
                edited_at: d.received_at,
            },
        }])
    }
}

fn registry() -> AdapterRegistry {
    let mut r = AdapterRegistry::with_defaults();
    r.register(Arc::new(GenericWebhookAdapter::new(ChannelType::Email, "test")));
    r.register(Arc::new(GenericWebhookAdapter::new(ChannelType::Chat, "test")));
    r.register(Arc::new(EditAdapter));
    r
}

async fn start_worker(db_url: &str, broker: &TestBroker, tune: impl FnOnce(&mut WorkerSettings)) -> RunningWorker {
    start_worker_with(db_url, broker, registry(), tune).await
}

fn webhook(id: &str, thread: &str, at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "conversationKey": thread, "direction": "inbound",
        "sender": {"id": "c-1", "displayName": "Lin"}, "body": format!("message {id}"), "occurredAt": at}))
    .unwrap()
}

async fn messages(pool: &PgPool) -> i64 {
    count(pool, "SELECT count(*) FROM messages").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_channel_type_reaches_a_conversation() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let email = db.project_with_entry_point("p", ChannelType::Email, "test", "support@example.com").await;
    let chat = db.project_with_entry_point("p", ChannelType::Chat, "test", "C024BE91L").await;
    let hook = db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    broker.publish("email.test", Some("Support@Example.com"), &webhook("e1", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("chat.test", Some("C024BE91L"), &webhook("c1", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("w1", "t", "2025-01-01T00:00:00Z")).await;
    wait_until(30, "3 messages", || async { messages(&db.pool).await == 3 }).await;
    // Generic-webhook keys are stored scoped to their entry point.
    for (ep, id, key) in [(email, "e1", "e1"), (chat, "c1", "c1"), (hook, "w1", "webhook:shop:w1")] {
        let conversation: uuid::Uuid = sqlx::query_scalar(
            "SELECT conversation_id FROM messages WHERE idempotency_key = $1 AND entry_point_id = $2",
        )
        .bind(key)
        .bind(ep)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let bundle = store::load_conversation(&db.pool, "p", conversation).await.unwrap().unwrap();
        assert_eq!(bundle.conversation.last_inbound_at, Some(at("2025-01-01T00:00:00Z")));
        assert_eq!(bundle.conversation.preview.as_deref(), Some(format!("message {id}").as_str()));
        assert_eq!(bundle.entry_points[0].id, ep);
    }
    w.stop().await;
    assert!(broker.dead_letters().await.is_empty());
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_with_a_reason_and_good_input_around_it_applies() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start_worker(&db.url, &broker, |s| s.max_message_bytes = 64 * 1024).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("ok-1", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.webhook", Some("nowhere"), &webhook("x-1", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.webhook", Some("shop"), b"{\"id\": oops").await;
    broker.publish("webhook.webhook", None, &webhook("x-2", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.nope", Some("shop"), &webhook("x-3", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.webhook", Some("shop"), &vec![b' '; 100 * 1024]).await;
    broker
        .publish(
            "webhook.webhook",
            Some("shop"),
            "{\"id\":\"nul\",\"direction\":\"inbound\",\"body\":\"a\\u0000b\"}".as_bytes(),
        )
        .await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("ok-2", "t", "2025-01-01T00:01:00Z")).await;
    wait_until(30, "5 dead letters", || async { broker.depth(&broker.topology.dead_queue).await == 5 }).await;
    wait_until(30, "3 good messages", || async { messages(&db.pool).await == 3 }).await;
    // PostgreSQL cannot store U+0000: the message is kept with U+FFFD in its place.
    let nul_body: String = sqlx::query_scalar("SELECT body FROM messages WHERE idempotency_key = 'webhook:shop:nul'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(nul_body, "a\u{FFFD}b");
    let mut reasons: Vec<String> = broker.dead_letters().await.into_iter().map(|d| d.reason).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["malformed_payload", "missing_entry_point", "payload_too_large", "unknown_adapter", "unknown_entry_point"]
    );
    let letters = broker.dead_letters().await;
    let unknown = letters.iter().find(|d| d.reason == "unknown_entry_point").unwrap();
    assert_eq!(unknown.adapter, "webhook");
    assert_eq!(unknown.attempts, 1);
    assert_eq!(unknown.routing_key, "webhook.webhook");
    assert!(unknown.error.contains("nowhere"), "{}", unknown.error);
    assert!(unknown.first_seen.is_some() && unknown.dead_at.is_some());
    assert_eq!(unknown.body, webhook("x-1", "t", "2025-01-01T00:00:00Z"), "the original body is kept");
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_redeliveries_and_replays_apply_once() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    // Dead-lettered first: its entry point does not exist yet.
    broker.publish("webhook.webhook", Some("late"), &webhook("r-1", "t", "2025-01-01T00:00:00Z")).await;
    wait_until(30, "a dead letter", || async { broker.depth(&broker.topology.dead_queue).await == 1 }).await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "late").await;
    // The same message published three more times.
    for _ in 0..3 {
        broker.publish("webhook.webhook", Some("late"), &webhook("r-1", "t", "2025-01-01T00:00:00Z")).await;
    }
    wait_until(30, "the message", || async { messages(&db.pool).await == 1 }).await;
    // Replay the dead letter: recognised, changes nothing.
    assert_eq!(broker.replay_dead(&Selection::All).await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_until(30, "queue drained", || async { broker.depth(&broker.topology.queue(ChannelType::Webhook)).await == 0 })
        .await;
    assert_eq!(messages(&db.pool).await, 1);
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_reason_applies_after_the_entry_point_exists() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    for i in 0..5 {
        broker
            .publish("webhook.webhook", Some("new-shop"), &webhook(&format!("m{i}"), "t", "2025-01-01T00:00:00Z"))
            .await;
    }
    broker.publish("webhook.webhook", Some("new-shop"), b"not json").await;
    wait_until(30, "6 dead letters", || async { broker.depth(&broker.topology.dead_queue).await == 6 }).await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "new-shop").await;
    assert_eq!(broker.replay_dead(&Selection::Reason("unknown_entry_point".into())).await, 5);
    wait_until(30, "5 replayed messages", || async { messages(&db.pool).await == 5 }).await;
    let left = broker.dead_letters().await;
    assert_eq!(left.len(), 1, "the malformed one stays");
    assert_eq!(left[0].reason, "malformed_payload");
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_before_its_message_is_parked_then_applied_or_expired() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Chat, "edits", "C1").await;
    db.project_with_entry_point("p", ChannelType::Chat, "test", "C1b").await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    // An edit of a message that never comes: parked, not retried nor dead-lettered.
    broker.publish("chat.edits", Some("C1"), b"never").await;
    wait_until(30, "edit parked", || async { count(&db.pool, "SELECT count(*) FROM parked_updates").await == 1 }).await;
    // An edit that arrives before its message: applied in the message's transaction.
    broker.publish("chat.edits", Some("C1"), b"soon").await;
    wait_until(30, "second edit parked", || async {
        count(&db.pool, "SELECT count(*) FROM parked_updates").await == 2
    })
    .await;
    broker.publish("chat.test", Some("C1b"), &webhook("soon", "t", "2025-01-01T00:00:00Z")).await;
    wait_until(30, "edit applied", || async {
        count(&db.pool, "SELECT count(*) FROM messages WHERE idempotency_key = 'soon' AND body = 'edited'").await == 1
    })
    .await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM parked_updates WHERE idempotency_key = 'soon'").await, 0);
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0, "nothing dead-lettered");
    // What waits too long expires (the worker's sweeper does this with INTAKE_PARKED_MAX_AGE).
    let report = intake::update::sweep_parked(&db.pool, Duration::ZERO).await.unwrap();
    assert_eq!((report.expired, report.waiting), (1, 0));
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_delays_but_loses_nothing() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("before", "t", "2025-01-01T00:00:00Z")).await;
    wait_until(30, "first message", || async { messages(&db.pool).await == 1 }).await;

    // Take the database away: refuse new connections and cut the open ones.
    let admin = sqlx::PgPool::connect(&format!("{ADMIN_URL}/postgres")).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", db.name)).execute(&admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&db.name)
        .execute(&admin)
        .await
        .unwrap();
    for i in 0..20 {
        broker
            .publish("webhook.webhook", Some("shop"), &webhook(&format!("during-{i}"), "t", "2025-01-01T00:00:00Z"))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0, "an outage is not the messages' fault");
    sqlx::query(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", db.name)).execute(&admin).await.unwrap();

    wait_until(60, "all 21 messages after recovery", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages").fetch_one(&db.pool).await.ok() == Some(21)
    })
    .await;
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_nothing() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let shop = || Some("shop".to_owned());
    broker
        .publish_many(
            (0..400)
                .map(|i| {
                    (
                        "webhook.webhook".into(),
                        shop(),
                        webhook(&format!("g{i}"), &format!("t{}", i % 7), "2025-01-01T00:00:00Z"),
                    )
                })
                .collect(),
        )
        .await;
    let w = start_worker(&db.url, &broker, |s| s.batch_size = 20).await;
    wait_until(30, "some progress", || async { messages(&db.pool).await > 50 }).await;
    w.stop().await;
    let applied = messages(&db.pool).await;
    let queue = broker.topology.queue(ChannelType::Webhook);
    // Every message is either applied or back in the queue; none lost, none stuck unacked.
    wait_until(10, "unacked messages back", || async { broker.depth(&queue).await as i64 + applied >= 400 }).await;
    assert_eq!(broker.depth(&queue).await as i64 + applied, 400);
    let w = start_worker(&db.url, &broker, |_| {}).await;
    wait_until(30, "all 400", || async { messages(&db.pool).await == 400 }).await;
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_on_one_queue_keep_every_conversation_right() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let a = start_worker(&db.url, &broker, |s| s.batch_size = 10).await;
    let b = start_worker(&db.url, &broker, |s| s.batch_size = 10).await;
    // 600 messages over 6 conversations, times shuffled, 100 of them duplicated.
    let mut expected_last = std::collections::HashMap::new();
    let mut batch = Vec::new();
    for i in 0..600u32 {
        let thread = format!("t{}", i % 6);
        let minute = (i * 37) % 600;
        let t = format!("2025-01-01T{:02}:{:02}:00Z", minute / 60, minute % 60);
        let e = expected_last.entry(thread.clone()).or_insert_with(|| t.clone());
        if t > *e {
            *e = t.clone();
        }
        let copies = if i % 6 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            batch.push(("webhook.webhook".to_owned(), Some("shop".to_owned()), webhook(&format!("m{i}"), &thread, &t)));
        }
    }
    broker.publish_many(batch).await;
    wait_until(60, "600 messages", || async { messages(&db.pool).await == 600 }).await;
    wait_until(30, "queue drained", || async { broker.depth(&broker.topology.queue(ChannelType::Webhook)).await == 0 })
        .await;
    a.stop().await;
    b.stop().await;
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>, i64)> = sqlx::query_as(
        "SELECT c.thread_key, c.last_message_at, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
           FROM conversations c",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    for (thread, last, n) in rows {
        assert_eq!(n, 100, "{thread}");
        assert_eq!(last, at(&expected_last[&thread]), "{thread}");
    }
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_work_the_same() {
    let db = TestDb::new().await;
    let prefix = format!("itest_{}", uuid::Uuid::new_v4().simple());
    let mut topology = intake::amqp::topology::Topology::with_prefix(&prefix);
    topology.queue_type = intake::amqp::QueueType::Quorum;
    topology.delivery_limit = 5;
    topology.retry_delays = vec![Duration::from_millis(200)];
    let broker = TestBroker::with_topology(topology).await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("q1", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("q1", "t", "2025-01-01T00:00:00Z")).await;
    broker.publish("webhook.webhook", Some("nowhere"), &webhook("q2", "t", "2025-01-01T00:00:00Z")).await;
    wait_until(30, "one message", || async { messages(&db.pool).await == 1 }).await;
    wait_until(30, "one dead letter", || async { broker.depth(&broker.topology.dead_queue).await == 1 }).await;
    w.stop().await;
    // Declaring again with the same settings is accepted (idempotent topology).
    let channel = broker.connection.create_channel().await.unwrap();
    broker.topology.declare(&channel).await.unwrap();
    broker.cleanup().await;
}

/// Close the worker's broker connection from the server side, as a broker restart does.
fn close_broker_connections(name_fragment: &str) -> usize {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(name_fragment)) {
        let pid = line.split_whitespace().next().unwrap();
        let status = std::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "test: simulated broker restart"])
            .status()
            .unwrap();
        closed += usize::from(status.success());
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reconnects_when_the_broker_drops_it() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start_worker(&db.url, &broker, |_| {}).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("before", "t", "2025-01-01T00:00:00Z")).await;
    wait_until(30, "first message", || async { messages(&db.pool).await == 1 }).await;
    let prefix = broker.topology.queue_prefix.clone();
    let closed = tokio::task::spawn_blocking(move || close_broker_connections(&format!("intake-worker {prefix}")))
        .await
        .unwrap();
    assert_eq!(closed, 1, "found the worker's connection");
    let batch = (0..50)
        .map(|i| {
            (
                "webhook.webhook".to_owned(),
                Some("shop".to_owned()),
                webhook(&format!("after-{i}"), "t", "2025-01-01T00:00:00Z"),
            )
        })
        .collect();
    broker.publish_many(batch).await;
    wait_until(60, "messages after reconnecting", || async { messages(&db.pool).await == 51 }).await;
    w.stop().await;
    broker.cleanup().await;
}
