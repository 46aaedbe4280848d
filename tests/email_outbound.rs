//! Agent replies on email conversations go out over real SMTP (aiosmtpd) with threading
//! headers, and `lastOutboundAt` moves only once the server accepted the message.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use intake::amqp::publish::LazyPublisher;
use intake::amqp::worker::{self, WorkerSettings};
use intake::smtp::{Mailer, OutboundQueue, SmtpArgs};
use intake::store;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "mail-token-123";

/// A real SMTP server writing what it receives to a Maildir.
struct SmtpServer {
    port: u16,
    maildir: PathBuf,
    _child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl SmtpServer {
    async fn start() -> Self {
        let port = free_port();
        let maildir = std::env::temp_dir().join(format!("intake-maildir-{}", uuid::Uuid::new_v4().simple()));
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
        wait_until(20, "SMTP server listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        SmtpServer { port, maildir, _child: child }
    }

    fn received(&self) -> Vec<String> {
        read_maildir(&self.maildir)
    }
}

fn read_maildir(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("new")) else { return vec![] };
    entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
}

/// Unfolded header value of a raw message.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\n\n").next().unwrap_or(raw).replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

struct Setup {
    db: TestDb,
    broker: TestBroker,
    api: String,
    client: reqwest::Client,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn setup(smtp_port: u16) -> Setup {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    store::ensure_project_token(&db.pool, "acme", TOKEN, "test").await.unwrap();
    let smtp =
        SmtpArgs { smtp_url: Some(format!("smtp://127.0.0.1:{smtp_port}")), smtp_timeout: Duration::from_secs(5) };
    let mut settings = WorkerSettings::new(broker.topology.clone());
    settings.mailer = Mailer::from_args(&smtp).unwrap();
    let stop = CancellationToken::new();
    let pool = store::connect(&db.url, 5).await.unwrap();
    let worker = tokio::spawn(worker::run(
        pool,
        intake::adapters::AdapterRegistry::with_defaults(),
        AMQP_URL.into(),
        settings,
        stop.clone(),
    ));
    let outbound =
        OutboundQueue { exchange: broker.topology.exchange.clone(), publisher: Arc::new(LazyPublisher::new(AMQP_URL)) };
    let api = spawn_api_with(intake::http::AppState {
        pool: db.pool.clone(),
        body_limit: 1 << 20,
        outbound_email: Some(Arc::new(outbound)),
    })
    .await;
    Setup { db, broker, api, client: reqwest::Client::new(), stop, worker }
}

impl Setup {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.client.request(method, format!("{}{path}", self.api)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    /// An email conversation with one inbound customer message; returns its path.
    async fn email_conversation(&self) -> String {
        let ep = self
            .call(
                Method::POST,
                "/internal/entry-points",
                Some(
                    json!({"channelType": "email", "adapterKey": "email", "externalChannelId": "Support@Example.com"}),
                ),
            )
            .await;
        let c = self
            .call(
                Method::POST,
                "/internal/conversations",
                Some(json!({"entryPointId": ep["id"], "subject": "Printer on fire"})),
            )
            .await;
        let path = format!("/internal/conversations/{}", c["conversation"]["conversationId"].as_str().unwrap());
        self.call(
            Method::PATCH,
            &path,
            Some(json!({"message": {"id": "cust-1@customer.example", "direction": "inbound",
            "body": "My printer is on fire.", "subject": "Printer on fire", "createdAt": "2026-01-01T10:00:00Z",
            "sender": {"id": "ada@customer.example", "displayName": "Ada", "primaryEmail": "ada@customer.example"}}})),
        )
        .await;
        path
    }

    async fn finish(self) {
        self.stop.cancel();
        self.worker.await.unwrap().unwrap();
        self.broker.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reply_is_sent_with_threading_headers_then_counts() {
    let smtp = SmtpServer::start().await;
    let s = setup(smtp.port).await;
    let path = s.email_conversation().await;
    let reply = json!({"message": {"id": "reply-1", "direction": "outbound", "body": "We are on it.",
        "sender": {"id": "agent-7", "displayName": "Kim from Support"}}});
    let body = s.call(Method::PATCH, &path, Some(reply.clone())).await;
    let pending = body["messages"].as_array().unwrap().iter().find(|m| m["id"] == "reply-1").unwrap().clone();
    assert_eq!(pending["metadata"]["deliveryStatus"], "pending");
    assert_eq!(body["conversation"]["lastOutboundAt"], Value::Null, "not before the SMTP server accepted it");

    wait_until(30, "the email at the SMTP server", || async { smtp.received().len() == 1 }).await;
    let raw = smtp.received().remove(0);
    assert_eq!(header(&raw, "To").as_deref(), Some("Ada <ada@customer.example>"));
    assert!(header(&raw, "From").unwrap().contains("<support@example.com>"), "{raw}");
    assert_eq!(header(&raw, "Subject").as_deref(), Some("Re: Printer on fire"));
    assert_eq!(header(&raw, "In-Reply-To").as_deref(), Some("<cust-1@customer.example>"));
    assert!(header(&raw, "References").unwrap().contains("<cust-1@customer.example>"));
    let conversation_id = path.rsplit('/').next().unwrap();
    assert_eq!(
        header(&raw, "Reply-To").unwrap(),
        format!("\"Kim from Support\" <support+{conversation_id}@example.com>")
    );
    let message_id = header(&raw, "Message-ID").unwrap();
    assert!(message_id.ends_with("@example.com>"), "{message_id}");
    assert!(raw.contains("We are on it."));

    wait_until(30, "sent status recorded", || async {
        let b = s.call(Method::GET, &path, None).await;
        b["conversation"]["lastOutboundAt"] != Value::Null
    })
    .await;
    let b = s.call(Method::GET, &path, None).await;
    let sent = b["messages"].as_array().unwrap().iter().find(|m| m["id"] == "reply-1").unwrap().clone();
    assert_eq!(sent["metadata"]["deliveryStatus"], "sent");
    assert_eq!(format!("<{}>", sent["metadata"]["messageId"].as_str().unwrap()), message_id);
    assert_eq!(b["conversation"]["lastOutboundAt"], sent["createdAt"]);
    assert_eq!(b["conversation"]["metadata"]["firstResponseAt"], sent["createdAt"]);
    // Repeating the PATCH sends nothing more.
    s.call(Method::PATCH, &path, Some(reply)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.received().len(), 1);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_smtp_server_is_retried_then_dead_lettered_and_marked_failed() {
    let s = setup(free_port()).await; // nothing listens there
    let path = s.email_conversation().await;
    s.call(
        Method::PATCH,
        &path,
        Some(json!({"message": {"id": "reply-x", "direction": "outbound", "body": "Hello?"}})),
    )
    .await;
    wait_until(30, "a dead letter", || async { s.broker.depth(&s.broker.topology.dead_queue).await == 1 }).await;
    let dead = s.broker.dead_letters().await.remove(0);
    assert_eq!(dead.reason, "retries_exhausted");
    assert_eq!(dead.attempts, 3);
    assert!(dead.error.contains("smtp_unavailable"), "{}", dead.error);
    let b = s.call(Method::GET, &path, None).await;
    let m = b["messages"].as_array().unwrap().iter().find(|m| m["id"] == "reply-x").unwrap().clone();
    assert_eq!(m["metadata"]["deliveryStatus"], "failed");
    assert_eq!(b["conversation"]["lastOutboundAt"], Value::Null, "a failed send is no reply");
    let _ = s.db.name.len();
    s.finish().await;
}
