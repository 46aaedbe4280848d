//! Scale benchmark of issue 10 (not a timed test; `#[ignore]`d, run by hand):
//! PATCH latency on a conversation of 200,000 messages against one of 1 message, and list
//! latency on a project of 1,000,000 conversations, through the real HTTP API.
//!
//! cargo nextest run --run-ignored only -E 'test(scale_benchmark)' --no-capture

mod common;

use std::time::{Duration, Instant};

use common::*;
use intake::store;
use serde_json::json;
use uuid::Uuid;

const TOKEN: &str = "bench-token";

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.50), at(0.99))
}

/// p50 and p99 in ms of `n` calls, after 5 to warm up.
async fn time<F, Fut>(n: usize, mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..5 {
        f(1_000_000 + i).await;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        f(i).await;
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

#[tokio::test]
#[ignore = "scale benchmark: builds 200k messages and 1M conversations (minutes)"]
async fn scale_benchmark() {
    let db = TestDb::new().await;
    store::ensure_project_token(&db.pool, "bench", TOKEN, "bench").await.unwrap();
    let base = spawn_api(db.pool.clone(), 1 << 20).await;
    let client = reqwest::Client::new();
    let new_conversation = || async {
        let r: serde_json::Value = client
            .post(format!("{base}/internal/conversations"))
            .bearer_auth(TOKEN)
            .json(&json!({"subject": "bench", "initialMessage": "hello"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Uuid::parse_str(r["conversation"]["conversationId"].as_str().unwrap()).unwrap()
    };
    let small = new_conversation().await;
    let big = new_conversation().await;

    // Test data in set-based SQL (a fixture, not traffic: the update logic is what is measured).
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO messages (id, project_id, conversation_id, idempotency_key, direction, body, occurred_at)
         SELECT gen_random_uuid(), 'bench', $1, 'bulk-' || g, CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                repeat('x', 300), now() - interval '30 days' + g * interval '1 second'
           FROM generate_series(1, 200000) g",
    )
    .bind(big)
    .execute(&db.pool)
    .await
    .unwrap();
    let fill_messages = started.elapsed();
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO conversations (id, project_id, subject, preview, user_display_name, user_primary_email,
                                    last_activity_at, updated_at, status, tags, assigned_to_user_id)
         SELECT gen_random_uuid(), 'bench', 'Order ' || g, 'Where is parcel ' || md5(g::text),
                'Customer ' || g, 'c' || g || '@example.com', now() - interval '60 days' + g * interval '1 second',
                now() - interval '60 days' + g * interval '1 second',
                (ARRAY['open', 'pending', 'closed'])[g % 3 + 1], ARRAY['t' || (g % 100)], 'agent-' || (g % 50)
           FROM generate_series(1, 1000000) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Their search entries, as a running process's refresh writes them.
    intake::store::search::refresh(&db.pool).await.unwrap();
    let fill_conversations = started.elapsed();
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    println!("fill: 200,000 messages {fill_messages:.1?}, 1,000,000 conversations {fill_conversations:.1?}");

    let patch = |conversation: Uuid, i: usize| {
        let client = client.clone();
        let url = format!("{base}/internal/conversations/{conversation}");
        async move {
            let direction = if i.is_multiple_of(2) { "inbound" } else { "outbound" };
            let r = client
                .patch(url)
                .bearer_auth(TOKEN)
                .json(&json!({"message": {"id": format!("{conversation}-{i}"), "direction": direction,
                    "body": "a new message", "sender": {"id": "cust-1"}}}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let bytes = r.bytes().await.unwrap();
            assert!(bytes.len() < 256 * 1024);
        }
    };
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.unwrap();
        }
    };
    let n = 200;
    let list = |query: &'static str| get(format!("/internal/conversations?{query}"));
    let rows = [
        ("PATCH, conversation of 1 message", time(n, |i| patch(small, i)).await),
        ("PATCH, conversation of 200,000 messages", time(n, |i| patch(big, i)).await),
        (
            "GET conversation (newest 50), 200,000 messages",
            time(n, |_| get(format!("/internal/conversations/{big}"))).await,
        ),
        ("list, 1M conversations, limit=50", time(n, |_| list("limit=50")).await),
        ("list, 1M, limit=50&offset=1000", time(n, |_| list("limit=50&offset=1000")).await),
        ("list, 1M, status=pending", time(n, |_| list("status=pending")).await),
        ("list, 1M, tag=t7", time(n, |_| list("tag=t7")).await),
        ("list, 1M, assignedToUserId=agent-7", time(n, |_| list("assignedToUserId=agent-7")).await),
        ("list, 1M, query=c4242 (email substring)", time(n, |_| list("query=c4242")).await),
        ("list, 1M, query=customer 99999 (name)", time(n, |_| list("query=customer%2099999")).await),
    ];
    println!("| request | p50 ms | p99 ms |\n|---|---:|---:|");
    for (what, (p50, p99)) in rows {
        println!("| {what} | {p50:.1} | {p99:.1} |");
    }
}
