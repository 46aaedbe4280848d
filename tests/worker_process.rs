//! The real `intake worker` binary: SIGKILL mid-stream and restart, then SIGTERM. Every
//! published message must be applied exactly once.

mod common;

use std::time::Duration;

use common::*;
use intake::adapters::ChannelType;
use serde_json::json;
use tokio::process::Child;

fn spawn_worker(db: &TestDb, broker: &TestBroker) -> Child {
    worker_command(&db.url, &broker.topology).env("INTAKE_BATCH_SIZE", "25").spawn().expect("start intake worker")
}

fn body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": format!("k-{i}"), "conversationKey": format!("t{}", i % 13),
        "direction": if i.is_multiple_of(4) { "outbound" } else { "inbound" },
        "body": format!("message {i}"), "occurredAt": format!("2025-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60)}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_apply_every_message_exactly_once() {
    const TOTAL: usize = 3000;
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;

    let mut worker = spawn_worker(&db, &broker);
    let publishing = {
        let broker_publisher = TestBroker::with_topology(broker.topology.clone()).await;
        tokio::spawn(async move {
            for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(150) {
                broker_publisher
                    .publish_many(
                        chunk.iter().map(|&i| ("webhook.webhook".into(), Some("shop".into()), body(i))).collect(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    let mut kills = 0;
    let mut last = 0;
    while kills < 5 {
        wait_until(60, "progress between kills", || async {
            count(&db.pool, "SELECT count(*) FROM messages").await > last
        })
        .await;
        last = count(&db.pool, "SELECT count(*) FROM messages").await;
        if last as usize >= TOTAL {
            break;
        }
        worker.kill().await.unwrap(); // SIGKILL
        kills += 1;
        worker = spawn_worker(&db, &broker);
    }
    publishing.await.unwrap();
    wait_until(120, "every message applied", || async {
        count(&db.pool, "SELECT count(*) FROM messages").await as usize == TOTAL
    })
    .await;

    // Graceful stop: SIGTERM, exit 0.
    let pid = worker.id().expect("running") as i32;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "worker exit status {status}");

    assert!(kills >= 1, "the worker was killed at least once mid-stream");
    let distinct = count(&db.pool, "SELECT count(DISTINCT idempotency_key) FROM messages").await;
    assert_eq!(distinct as usize, TOTAL);
    let per_thread: Vec<(i64,)> =
        sqlx::query_as("SELECT count(*) FROM messages GROUP BY conversation_id").fetch_all(&db.pool).await.unwrap();
    assert_eq!(per_thread.len(), 13);
    // No timestamp behind its newest message.
    let behind = count(
        &db.pool,
        "SELECT count(*) FROM conversations c WHERE c.last_message_at <> (SELECT max(occurred_at) FROM messages m WHERE m.conversation_id = c.id)",
    )
    .await;
    assert_eq!(behind, 0);
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0);
    assert_eq!(broker.depth(&broker.topology.queue(ChannelType::Webhook)).await, 0);
    broker.cleanup().await;
}
