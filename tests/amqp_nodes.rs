//! Every RabbitMQ-facing command takes a list of node URLs and gets past a dead first one: the
//! worker, `intake publish`, `intake dlq`, `intake gateway` and `intake smtpd` as the real binary,
//! and the `LazyPublisher` they share alone (including a list of only dead nodes).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use intake::adapters::ChannelType;

/// Nothing listens on port 1: the connection is refused at once.
const DEAD_FIRST: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn node_list() -> String {
    format!("{DEAD_FIRST},{AMQP_URL}")
}

fn webhook(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"id": id, "conversationKey": "t", "direction": "inbound",
        "sender": {"id": "c-1", "displayName": "Lin"}, "body": format!("message {id}"), "occurredAt": "2025-01-01T00:00:00Z"}))
    .unwrap()
}

fn intake(topology: &intake::amqp::topology::Topology) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_intake"));
    command
        .envs(broker_env(topology))
        .env("AMQP_URL", node_list())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(mut command: tokio::process::Command) -> String {
    let out = tokio::time::timeout(Duration::from_secs(60), command.output()).await.expect("finishes").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_worker_and_dlq_commands_skip_a_dead_first_node() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let dir = tempfile_dir();
    let known = dir.join("known.json");
    let unknown = dir.join("unknown.json");
    std::fs::write(&known, webhook("n1")).unwrap();
    std::fs::write(&unknown, webhook("n2")).unwrap();

    // intake publish: one to a registered entry point, one to an unknown one.
    let mut publish = intake(&broker.topology);
    publish.args(["publish", "--adapter", "webhook", "--external-channel-id", "shop"]).arg(&known);
    run(publish).await;
    let mut publish = intake(&broker.topology);
    publish.args(["publish", "--adapter", "webhook", "--external-channel-id", "elsewhere"]).arg(&unknown);
    run(publish).await;

    // intake worker stores the first and dead-letters the second.
    let mut worker = worker_command(&db.url, &broker.topology);
    worker.env("AMQP_URL", node_list());
    let mut worker = worker.spawn().unwrap();
    wait_until(60, "the message stored", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 1 })
        .await;
    wait_until(30, "the other dead-lettered", || async { broker.depth(&broker.topology.dead_queue).await == 1 }).await;

    // intake dlq list and replay (after registering the missing entry point).
    let mut list = intake(&broker.topology);
    list.args(["dlq", "list", "--json"]);
    let listed = run(list).await;
    assert!(listed.contains("unknown_entry_point"), "{listed}");
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "elsewhere").await;
    let mut replay = intake(&broker.topology);
    replay.args(["dlq", "replay", "--all"]);
    run(replay).await;
    wait_until(60, "the replayed message stored", || async {
        count(&db.pool, "SELECT count(*) FROM messages").await == 2
    })
    .await;

    let _ = worker.start_kill();
    let _ = worker.wait().await;
    broker.cleanup().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Start a server command and wait until it listens on `addr`.
async fn serve(mut command: tokio::process::Command, addr: &str) -> tokio::process::Child {
    let child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    wait_until(60, "the server to listen", || async { tokio::net::TcpStream::connect(addr).await.is_ok() }).await;
    child
}

/// One SMTP line exchange: send `line` (unless empty), read the reply, return its code.
async fn smtp_step(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>, line: &str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    if !line.is_empty() {
        stream.get_mut().write_all(line.as_bytes()).await.unwrap();
    }
    loop {
        let mut reply = String::new();
        stream.read_line(&mut reply).await.unwrap();
        if reply.as_bytes().get(3) != Some(&b'-') {
            return reply[..3].parse().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_smtpd_commands_skip_a_dead_first_node() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("acme", ChannelType::Email, "email", "support@acme.example").await;
    intake::store::ensure_project(&db.pool, "acme").await.unwrap();
    intake::store::create_entry_point_with_secrets(
        &db.pool,
        "acme",
        ChannelType::Webhook,
        "webhook",
        "shop",
        serde_json::json!({}),
        &[WHSEC.to_owned()],
        None,
    )
    .await
    .unwrap();

    // intake gateway: a signed webhook is published.
    let addr = free_addr();
    let mut gateway = intake(&broker.topology);
    gateway.arg("gateway").env("DATABASE_URL", &db.url).env("INTAKE_GATEWAY_ADDR", &addr);
    let mut gateway = serve(gateway, &addr).await;
    let body = webhook("g1");
    let ts = chrono::Utc::now().timestamp();
    let signature = intake::adapters::signature::sign_standard_webhooks(WHSEC, "msg_1", ts, &body).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/hooks/webhook/shop"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(broker.depth(&broker.topology.queue(ChannelType::Webhook)).await, 1);
    let _ = gateway.start_kill();

    // intake smtpd: a mail is accepted (250 after DATA) only once the broker confirmed it.
    let addr = free_addr();
    let mut smtpd = intake(&broker.topology);
    smtpd.arg("smtpd").env("DATABASE_URL", &db.url).env("INTAKE_SMTPD_ADDR", &addr);
    let mut smtpd = serve(smtpd, &addr).await;
    let mut stream = tokio::io::BufReader::new(tokio::net::TcpStream::connect(&addr).await.unwrap());
    assert_eq!(smtp_step(&mut stream, "").await, 220);
    assert_eq!(smtp_step(&mut stream, "EHLO client.example.org\r\n").await, 250);
    assert_eq!(smtp_step(&mut stream, "MAIL FROM:<ada@example.org>\r\n").await, 250);
    assert_eq!(smtp_step(&mut stream, "RCPT TO:<support@acme.example>\r\n").await, 250);
    assert_eq!(smtp_step(&mut stream, "DATA\r\n").await, 354);
    let mail = "From: Ada <ada@example.org>\r\nTo: support@acme.example\r\nSubject: Hi\r\n\
                Message-ID: <n1@example.org>\r\n\r\nHello\r\n.\r\n";
    assert_eq!(smtp_step(&mut stream, mail).await, 250);
    let _ = smtp_step(&mut stream, "QUIT\r\n").await;
    assert_eq!(broker.depth(&broker.topology.queue(ChannelType::Email)).await, 1);
    let _ = smtpd.start_kill();
    let _ = gateway.wait().await;
    let _ = smtpd.wait().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_publisher_skips_a_dead_first_node_and_fails_fast_when_all_are_dead() {
    let broker = TestBroker::new().await;
    let publisher = intake::amqp::publish::LazyPublisher::new(&node_list()).declaring(broker.topology.clone());
    let props = intake::amqp::publish::new_message_properties("m1", "application/json", []);
    publisher.publish(&broker.topology.exchange, "webhook.webhook", &webhook("g1"), props).await.unwrap();
    assert_eq!(broker.depth(&broker.topology.queue(ChannelType::Webhook)).await, 1);

    // Only dead nodes: the caller gets an error at once (and answers 503 / 451), naming each.
    let dead = intake::amqp::publish::LazyPublisher::new(&format!("{DEAD_FIRST},amqp://guest:guest@127.0.0.1:2/%2f"));
    let props = intake::amqp::publish::new_message_properties("m2", "application/json", []);
    let started = std::time::Instant::now();
    let error = dead.publish(&broker.topology.exchange, "webhook.webhook", b"{}", props).await.unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("any of 2 RabbitMQ nodes") && text.contains("127.0.0.1:2"), "{text}");
    assert!(!text.contains("guest:guest"), "password redacted: {text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    publisher.close().await;
    broker.cleanup().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("intake-nodes-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
