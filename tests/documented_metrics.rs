//! A fresh `intake serve` exports every metric the README documents (counters at zero, the
//! health gauges from its first sample), and stops without logging an error.

mod common;

use std::time::Duration;

use common::*;
use intake::adapters::ChannelType;

/// Metric names in the README's Operations bullets on metrics.
fn documented_metrics() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut names = Vec::new();
    let mut in_metrics = false;
    for line in readme.lines() {
        if line.starts_with("- **") {
            in_metrics = line.contains("Metrics") || line.contains("Health gauges");
        } else if line.starts_with('#') {
            in_metrics = false;
        }
        if !in_metrics {
            continue;
        }
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("intake_") && !names.iter().any(|n| n == word) {
                names.push(word.to_owned());
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_serve_exports_every_documented_metric() {
    let documented = documented_metrics();
    assert!(documented.len() >= 25, "the README's metrics list was not found: {documented:?}");
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    // Series per dead-letter reason and per entry point exist once there is one of each.
    let entry_point = db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    sqlx::query("INSERT INTO entry_point_ingest (entry_point_id, last_ingest_at) VALUES ($1, now())")
        .bind(entry_point)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut headers = lapin::types::FieldTable::default();
    headers.insert("x-intake-reason".into(), intake::amqp::long_string("malformed_payload"));
    headers.insert("x-intake-adapter".into(), intake::amqp::long_string("webhook"));
    let properties = lapin::BasicProperties::default().with_headers(headers);
    broker.publisher.publish("", &broker.topology.dead_queue, b"{", properties).await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let topology = &broker.topology;
    let serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .envs(broker_env(topology))
        .env("INTAKE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("INTAKE_HEALTH_SAMPLE_EVERY", "250ms")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start intake serve");

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let text = match client.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let missing: Vec<&String> =
            documented.iter().filter(|name| !text.contains(&format!("# TYPE {name} "))).collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(missing.is_empty(), "documented but not exported by a fresh `intake serve`: {missing:?}");

    let pid = serve.id().expect("running") as i32;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), serve.wait_with_output()).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "serve exit status {}\n{stderr}", output.status);
    assert!(!stderr.contains("ERROR"), "serve logged an error:\n{stderr}");
    broker.cleanup().await;
}
