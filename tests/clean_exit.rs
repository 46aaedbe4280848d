//! The real binary: `intake dlq` commands and a worker's SIGTERM shutdown log no `ERROR`
//! (channels are closed before their connection), `dlq list` shows the publisher's message id
//! and `dlq show` every property and header.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use intake::adapters::ChannelType;

fn intake(broker: &TestBroker, db: &TestDb, args: &[&str]) -> std::process::Command {
    let topology = &broker.topology;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    command.args(args).env("DATABASE_URL", &db.url).envs(broker_env(topology)).env("RUST_LOG", "info");
    command
}

fn run(broker: &TestBroker, db: &TestDb, args: &[&str]) -> (String, String) {
    let Output { status, stdout, stderr } = intake(broker, db, args).output().expect("run intake");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned());
    assert!(status.success(), "intake {args:?}: {status}\n{stderr}");
    assert!(!stderr.contains("ERROR"), "intake {args:?} logged an error:\n{stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_and_worker_shutdown_log_no_error() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;

    let worker = worker_command(&db.url, &broker.topology)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start intake worker");
    // One message for a registered entry point, one for an unknown one (dead-lettered).
    broker.publish("webhook.webhook", Some("shop"), br#"{"id":"1","direction":"inbound","body":"hi"}"#).await;
    let message_id = "publisher-id-42";
    let properties = intake::amqp::publish::new_message_properties(
        message_id,
        "application/json",
        [(intake::amqp::envelope::EXTERNAL_CHANNEL_ID, "unknown-shop".to_owned())],
    );
    let body = br#"{"id":"2","direction":"inbound","body":"lost"}"#;
    broker.publisher.publish(&broker.topology.exchange, "webhook.webhook", body, properties).await.unwrap();
    wait_until(30, "the dead letter", || async { broker.depth(&broker.topology.dead_queue).await == 1 }).await;
    wait_until(30, "the message applied", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 1 })
        .await;

    // SIGTERM: exit 0, nothing logged as an error.
    let pid = worker.id().expect("running") as i32;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let output =
        tokio::time::timeout(Duration::from_secs(30), worker.wait_with_output()).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "worker exit status {}\n{stderr}", output.status);
    assert!(stderr.contains("worker stopped"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "the worker's shutdown logged an error:\n{stderr}");

    // Every dlq command, a few times (the error was a race).
    for _ in 0..3 {
        let (list, _) = run(&broker, &db, &["dlq", "list"]);
        assert!(list.lines().next().unwrap().contains("MESSAGE_ID"), "{list}");
        assert!(list.contains(message_id) && list.contains("unknown_entry_point"), "{list}");
    }
    let (json, _) = run(&broker, &db, &["dlq", "list", "--json"]);
    let letter: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(letter["message_id"], message_id);
    let id = letter["id"].as_str().unwrap().to_owned();

    let (show, _) = run(&broker, &db, &["dlq", "show", &id]);
    for expected in [
        format!("message_id: {message_id}"),
        "content_type: application/json".to_owned(),
        "delivery_mode: 2 (persistent)".to_owned(),
        "x-intake-external-channel-id: unknown-shop".to_owned(),
        "x-intake-reason: unknown_entry_point".to_owned(),
        "x-intake-adapter: webhook".to_owned(),
        "x-intake-original-routing-key: webhook.webhook".to_owned(),
        format!("x-intake-dead-id: {id}"),
    ] {
        assert!(show.lines().any(|l| l == expected), "`{expected}` missing from dlq show:\n{show}");
    }
    assert!(show.lines().any(|l| l.starts_with("timestamp: ")), "{show}");
    assert!(show.contains("\"body\":\"lost\""), "{show}");

    // A failing command exits 1 with its error, and no lapin error beside it.
    let output = intake(&broker, &db, &["dlq", "show", "nope"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no dead letter `nope`"), "{stderr}");
    assert!(!stderr.contains("lapin"), "{stderr}");

    let (purged, _) = run(&broker, &db, &["dlq", "purge", "--reason", "unknown_entry_point"]);
    assert!(purged.contains("purged 1"), "{purged}");
    run(&broker, &db, &["dlq", "purge", "--all"]);
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0);
    broker.cleanup().await;
}
