//! Email end to end, through real RabbitMQ, PostgreSQL and SMTP (aiosmtpd): inbound MIME
//! becomes conversations that thread by Message-ID and reply token; agent replies go out over
//! SMTP with threading headers, and `lastOutboundAt` moves only once the server accepted them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use intake::adapters::email::EmailConfig;
use intake::adapters::AdapterRegistry;
use intake::amqp::publish::LazyPublisher;
use intake::attachments::AttachmentStore;
use intake::smtp::{Mailer, OutboundQueue, SmtpArgs};
use intake::store;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

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

/// aiosmtpd comes from PyPI; install it on a machine that lacks it, so the README's test
/// command works on a fresh machine too.
fn ensure_aiosmtpd() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let importable = || {
            std::process::Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success())
        };
        if !importable() {
            let installed = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "aiosmtpd>=1.4"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(installed && importable(), "aiosmtpd is missing and `pip install aiosmtpd` failed");
        }
    });
}

impl SmtpServer {
    async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// On a given port (a server that comes back after an outage).
    async fn start_on(port: u16) -> Self {
        ensure_aiosmtpd();
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
    workers: Vec<RunningWorker>,
    attachments: PathBuf,
    smtp: SmtpArgs,
    outbound: Arc<OutboundQueue>,
    /// Workers take one delivery at a time (so two workers really share the jobs).
    one_at_a_time: bool,
}

async fn setup(smtp_port: u16) -> Setup {
    let mut s = setup_without_worker(smtp_port, None).await;
    s.start_worker().await;
    s
}

/// The API but no worker yet (start it with [`Setup::start_worker`]); `retry_delays` replace
/// the test broker's short ones.
async fn setup_without_worker(smtp_port: u16, retry_delays: Option<Vec<Duration>>) -> Setup {
    intake::metrics::handle(); // count from the start
    let db = TestDb::new().await;
    let broker = match retry_delays {
        None => TestBroker::new().await,
        Some(delays) => {
            let mut topology =
                intake::amqp::topology::Topology::with_prefix(&format!("itest_{}", uuid::Uuid::new_v4().simple()));
            topology.retry_delays = delays;
            TestBroker::with_topology(topology).await
        }
    };
    store::ensure_project_token(&db.pool, "acme", TOKEN, "test").await.unwrap();
    let smtp = SmtpArgs {
        smtp_url: Some(format!("smtp://127.0.0.1:{smtp_port}")),
        smtp_timeout: Duration::from_secs(5),
        smtp_lease: Duration::from_secs(60),
    };
    let attachments = std::env::temp_dir().join(format!("intake-attachments-{}", uuid::Uuid::new_v4().simple()));
    let outbound = Arc::new(OutboundQueue {
        exchange: broker.topology.exchange.clone(),
        publisher: Arc::new(LazyPublisher::new(AMQP_URL)),
    });
    let api = spawn_api_with(intake::http::AppState {
        pool: db.pool.clone(),
        body_limit: 1 << 20,
        outbound_email: Some(outbound.clone()),
    })
    .await;
    Setup {
        db,
        broker,
        api,
        client: reqwest::Client::new(),
        workers: vec![],
        attachments,
        smtp,
        outbound,
        one_at_a_time: false,
    }
}

impl Setup {
    /// Another worker (as another process would be: its own pool and its own sender id).
    async fn start_worker(&mut self) {
        let store = AttachmentStore::open(&self.attachments).unwrap();
        let registry = AdapterRegistry::with_email_config(EmailConfig {
            max_attachment_bytes: 1 << 20,
            keep_attachment_content: true,
        });
        let (smtp, one) = (&self.smtp, self.one_at_a_time);
        let worker = start_worker_with(&self.db.url, &self.broker, registry, |settings| {
            settings.mailer = Mailer::from_args(smtp).unwrap();
            settings.attachment_store = Some(store);
            if one {
                settings.prefetch = 1;
                settings.batch_size = 1;
            }
        })
        .await;
        self.workers.push(worker);
    }

    /// Register the support mailbox as an email entry point.
    async fn mailbox(&self) -> Value {
        let body = json!({"channelType": "email", "adapterKey": "email", "externalChannelId": "Support@Example.com",
                          "metadata": {"agentDomains": ["agents.example.com"]}});
        self.call(Method::POST, "/internal/entry-points", Some(body)).await
    }

    /// Publish raw RFC 5322 bytes the way a mail integration does.
    async fn receive_mail(&self, raw: &[u8]) {
        self.broker.publish("email.email", None, raw).await;
    }

    async fn messages(&self) -> i64 {
        count(&self.db.pool, "SELECT count(*) FROM messages").await
    }

    /// The one conversation of the test, through the API.
    async fn only_conversation(&self) -> (String, Value) {
        let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM conversations").fetch_one(&self.db.pool).await.unwrap();
        let path = format!("/internal/conversations/{id}");
        let body = self.call(Method::GET, &path, None).await;
        (path, body)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call_raw(method, path, body).await;
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    async fn call_raw(&self, method: Method, path: &str, body: Option<Value>) -> (reqwest::StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.api)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// (delivery state, stored Message-ID, claim owner) of a message.
    async fn delivery(&self, key: &str) -> (Option<String>, Option<String>, Option<String>) {
        sqlx::query_as("SELECT delivery_state, external_id, delivery_owner FROM messages WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn wait_for_state(&self, key: &str, state: &str) {
        wait_until(60, &format!("`{key}` {state}"), || async { self.delivery(key).await.0.as_deref() == Some(state) })
            .await;
    }

    /// An email conversation with one inbound customer message; returns its path.
    async fn email_conversation(&self) -> String {
        let ep = self.mailbox().await;
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
        for worker in self.workers {
            worker.stop().await;
        }
        self.broker.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.attachments);
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
    // The answer is read after the commit; by then the outbound sender may already have claimed
    // the mail (`sending`, seen once under CI load). Either way it is not sent yet.
    let status = pending["metadata"]["deliveryStatus"].as_str();
    assert!(matches!(status, Some("pending" | "sending")), "{pending}");
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

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

/// A customer's mail as a real client writes it: multipart/mixed with a plain/HTML alternative
/// and, optionally, a PDF attachment (built with lettre).
fn customer_mail(
    message_id: &str,
    to: &str,
    subject: &str,
    sent: chrono::DateTime<chrono::Utc>,
    text: &str,
    thread: &[&str],
    attach: bool,
) -> Vec<u8> {
    use lettre::message::header::ContentType;
    use lettre::message::{Attachment, MultiPart};
    let mut builder = lettre::Message::builder()
        .from("Ada Lovelace <ada@customer.example>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .message_id(Some(format!("<{message_id}>")))
        .date(sent.into());
    if let Some(parent) = thread.last() {
        builder = builder.in_reply_to(format!("<{parent}>"));
        builder = builder.references(thread.iter().map(|id| format!("<{id}>")).collect::<Vec<_>>().join(" "));
    }
    let html = format!("<html><body><p>{}</p></body></html>", text.replace('\n', "<br>"));
    let mut body = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(text.to_owned(), html));
    if attach {
        body = body.singlepart(
            Attachment::new("invoice-4711.pdf".into())
                .body(PDF.to_vec(), ContentType::parse("application/pdf").unwrap()),
        );
    }
    builder.multipart(body).unwrap().formatted()
}

/// `minutes` before the test's start, in whole seconds as mail dates have them.
fn minutes_before(start: chrono::DateTime<chrono::Utc>) -> impl Fn(i64) -> chrono::DateTime<chrono::Utc> {
    let start = start - chrono::Duration::nanoseconds(i64::from(start.timestamp_subsec_nanos()));
    move |minutes| start - chrono::Duration::minutes(minutes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_mail_an_agent_reply_and_the_customers_answer_form_one_thread() {
    let smtp = SmtpServer::start().await;
    let s = setup(smtp.port).await;
    s.mailbox().await;
    let ago = minutes_before(chrono::Utc::now());

    // 1. The customer writes, with an invoice attached.
    let first_at = ago(30);
    let first = customer_mail(
        "first.4711@customer.example",
        "Example Support <support@example.com>",
        "Printer on fire",
        first_at,
        "My printer is on fire.\nThe invoice is attached.",
        &[],
        true,
    );
    s.receive_mail(&first).await;
    wait_until(30, "the first mail applied", || async { s.messages().await == 1 }).await;
    let (path, b) = s.only_conversation().await;
    let m = &b["messages"][0];
    assert_eq!(m["id"], "first.4711@customer.example");
    assert_eq!(m["subject"], "Printer on fire");
    assert_eq!(m["body"].as_str().unwrap().trim(), "My printer is on fire.\nThe invoice is attached.");
    assert_eq!(m["sender"]["primaryEmail"], "ada@customer.example");
    assert_eq!(m["sender"]["displayName"], "Ada Lovelace");
    assert_eq!(m["metadata"]["direction"], "inbound");
    let attachment = &m["attachments"][0];
    assert_eq!(attachment["filename"], "invoice-4711.pdf");
    assert_eq!(attachment["contentType"], "application/pdf");
    assert_eq!(attachment["size"], PDF.len());
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(PDF));
    assert_eq!(attachment["sha256"], sha.as_str());
    let stored = s.attachments.join(attachment["storageKey"].as_str().expect("stored"));
    assert_eq!(std::fs::read(stored).unwrap(), PDF, "the attachment store holds the bytes");
    let c = &b["conversation"];
    assert_eq!(c["subject"], "Printer on fire");
    assert_eq!(c["userPrimaryEmail"], "ada@customer.example");
    assert_eq!(c["userDisplayName"], "Ada Lovelace");
    assert_eq!(c["lastInboundAt"], json!(first_at));
    assert_eq!(b["entryPoints"][0]["externalChannelId"], "support@example.com");

    // A redelivered copy changes nothing.
    s.receive_mail(&first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.messages().await, 1);

    // 2. The agent answers through the API; it goes out over SMTP threaded to the customer's mail.
    let reply = json!({"message": {"id": "agent-reply-1", "direction": "outbound", "body": "We are on it.",
        "sender": {"id": "agent-7", "displayName": "Kim from Support"}}});
    s.call(Method::PATCH, &path, Some(reply)).await;
    wait_until(30, "the reply at the SMTP server", || async { smtp.received().len() == 1 }).await;
    let sent = smtp.received().remove(0);
    assert_eq!(header(&sent, "In-Reply-To").as_deref(), Some("<first.4711@customer.example>"));
    assert_eq!(header(&sent, "Subject").as_deref(), Some("Re: Printer on fire"));
    let agent_message_id = header(&sent, "Message-ID").unwrap();
    wait_until(30, "lastOutboundAt after the server accepted it", || async {
        s.call(Method::GET, &path, None).await["conversation"]["lastOutboundAt"] != Value::Null
    })
    .await;

    // 3. The customer answers the agent's mail, quoting it: it threads into the conversation.
    let answer = customer_mail(
        "second.4712@customer.example",
        "Example Support <support@example.com>",
        "Re: Printer on fire",
        ago(-1), // a minute after the test started, so after the agent's reply
        "Thanks, it is out now.\n\nOn Tue, Kim from Support wrote:\n> We are on it.",
        &["first.4711@customer.example", agent_message_id.trim_matches(['<', '>'])],
        false,
    );
    s.receive_mail(&answer).await;
    wait_until(30, "the answer applied", || async { s.messages().await == 3 }).await;
    assert_eq!(count(&s.db.pool, "SELECT count(*) FROM conversations").await, 1, "one thread");
    let b = s.call(Method::GET, &path, None).await;
    assert_eq!(b["conversation"]["preview"], "Thanks, it is out now.", "quoted history is not the preview");
    let keys: Vec<&str> = b["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(keys, ["first.4711@customer.example", "agent-reply-1", "second.4712@customer.example"]);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_tokens_auto_replies_agent_copies_and_broken_mime() {
    let smtp = SmtpServer::start().await;
    let s = setup(smtp.port).await;
    s.mailbox().await;
    let ago = minutes_before(chrono::Utc::now());
    let first =
        customer_mail("a1@customer.example", "support@example.com", "Refund", ago(60), "Refund please", &[], false);
    s.receive_mail(&first).await;
    wait_until(30, "the first mail applied", || async { s.messages().await == 1 }).await;
    let (path, _) = s.only_conversation().await;
    let conversation_id = path.rsplit('/').next().unwrap().to_owned();

    // A new mail (no In-Reply-To) to the reply address intake hands out threads by its token.
    let token_mail = customer_mail(
        "a2@customer.example",
        &format!("support+{conversation_id}@example.com"),
        "About my refund",
        ago(50),
        "Any news?",
        &[],
        false,
    );
    s.receive_mail(&token_mail).await;
    wait_until(30, "the token mail applied", || async { s.messages().await == 2 }).await;
    assert_eq!(count(&s.db.pool, "SELECT count(*) FROM conversations").await, 1);

    // Closed conversations stay closed for an out-of-office answer.
    s.call(Method::PATCH, &path, Some(json!({"closedAt": ago(40)}))).await;
    let auto = String::from_utf8(customer_mail(
        "a3@customer.example",
        "support@example.com",
        "Automatic reply: Refund",
        ago(30),
        "I am out of office until Monday.",
        &["a1@customer.example"],
        false,
    ))
    .unwrap()
    .replacen("\r\n", "\r\nAuto-Submitted: auto-replied\r\n", 1);
    s.receive_mail(auto.as_bytes()).await;
    wait_until(30, "the auto-reply applied", || async { s.messages().await == 3 }).await;
    let b = s.call(Method::GET, &path, None).await;
    assert_ne!(b["conversation"]["closedAt"], Value::Null, "an auto-reply does not reopen");
    let auto_message = b["messages"].as_array().unwrap().iter().find(|m| m["id"] == "a3@customer.example").unwrap();
    assert_eq!(auto_message["metadata"]["autoReply"], "auto_reply");
    assert_eq!(
        b["conversation"]["metadata"]["lastCustomerReplyAt"],
        json!(ago(50)),
        "an auto-reply is no customer reply"
    );

    // A copy of a mail an agent sent from an agent domain is outbound.
    let copy = String::from_utf8(customer_mail(
        "a4@agents.example.com",
        "ada@customer.example",
        "Re: Refund",
        ago(20),
        "Your refund is on its way.",
        &["a1@customer.example"],
        false,
    ))
    .unwrap()
    .replace("From: \"Ada Lovelace\" <ada@customer.example>", "From: Kim <kim@agents.example.com>")
    .replace("From: Ada Lovelace <ada@customer.example>", "From: Kim <kim@agents.example.com>")
    .replacen("\r\n", "\r\nCc: support@example.com\r\n", 1);
    s.receive_mail(copy.as_bytes()).await;
    wait_until(30, "the agent copy applied", || async { s.messages().await == 4 }).await;
    let b = s.call(Method::GET, &path, None).await;
    let copy_message = b["messages"].as_array().unwrap().iter().find(|m| m["id"] == "a4@agents.example.com").unwrap();
    assert_eq!(copy_message["metadata"]["direction"], "outbound");
    assert_eq!(b["conversation"]["lastOutboundAt"], json!(ago(20)));

    // Bytes that are no mail at all are dead-lettered with a reason; the worker goes on.
    s.receive_mail(b"\x00\x01\x02 this is not a mail").await;
    wait_until(30, "a dead letter", || async { s.broker.depth(&s.broker.topology.dead_queue).await == 1 }).await;
    let dead = s.broker.dead_letters().await.remove(0);
    assert_eq!(dead.reason, "malformed_payload", "{}", dead.error);
    let next = customer_mail("a5@customer.example", "support@example.com", "New", ago(0), "Still there?", &[], false);
    s.receive_mail(&next).await;
    wait_until(30, "the next mail applied", || async { s.messages().await == 5 }).await;
    s.finish().await;
}

// ---------- outbound mail exactly once ----------

/// A counter of this test process (nextest runs each test in a process of its own), summed
/// over its labels, or the one series `name{labels}`.
fn counter(series: &str) -> f64 {
    intake::metrics::handle()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| *key == series || (!series.contains('{') && key.starts_with(&format!("{series}{{"))))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

fn message_id_of(raw: &str) -> String {
    header(raw, "Message-ID").unwrap().trim_matches(['<', '>']).to_owned()
}

fn send_job(path: &str, key: &str) -> intake::smtp::SendJob {
    intake::smtp::SendJob {
        project_id: "acme".into(),
        conversation_id: path.rsplit('/').next().unwrap().parse().unwrap(),
        message_key: key.into(),
        body: None,
        subject: None,
        sender_display_name: None,
    }
}

fn reply(key: &str) -> Value {
    json!({"message": {"id": key, "direction": "outbound", "body": format!("Reply {key}"),
        "sender": {"id": "agent-7", "displayName": "Kim from Support"}}})
}

fn job_key(dead: &intake::amqp::dlq::DeadLetter) -> String {
    serde_json::from_slice::<Value>(&dead.body).unwrap()["messageKey"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_a_retried_patch_and_a_duplicate_job_send_one_mail() {
    let smtp = SmtpServer::start().await;
    // Retries long enough that a job finding the other worker's claim is retried, not dead.
    let delays =
        vec![Duration::from_millis(300), Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];
    let mut s = setup_without_worker(smtp.port, Some(delays)).await;
    s.one_at_a_time = true;
    let path = s.email_conversation().await;
    // The client sends the reply and, not sure it arrived, sends it again: still pending, so it
    // is queued twice; and a third job, as a redelivered copy would be.
    s.call(Method::PATCH, &path, Some(reply("reply-1"))).await;
    s.call(Method::PATCH, &path, Some(reply("reply-1"))).await;
    s.outbound.enqueue("email", &send_job(&path, "reply-1")).await.unwrap();
    let queue = s.broker.topology.outbound_email_queue();
    wait_until(30, "three jobs queued", || async { s.broker.depth(&queue).await == 3 }).await;

    // Two workers take them at the same time, one delivery each.
    s.start_worker().await;
    s.start_worker().await;
    wait_until(60, "every job handled", || async {
        counter("intake_emails_sent_total") + counter("intake_email_jobs_skipped_total") >= 3.0
    })
    .await;
    s.wait_for_state("reply-1", "sent").await;
    let received = smtp.received();
    assert_eq!(received.len(), 1, "exactly one mail at the SMTP server");
    let (_, stored, owner) = s.delivery("reply-1").await;
    assert_eq!(stored.as_deref(), Some(message_id_of(&received[0]).as_str()), "the stored Message-ID is the mail's");
    assert_eq!(owner, None, "the claim ended");
    assert_eq!(counter("intake_emails_sent_total"), 1.0);
    assert_eq!(counter(r#"intake_email_jobs_skipped_total{reason="already_sent"}"#), 2.0);
    assert_eq!(s.broker.depth(&s.broker.topology.dead_queue).await, 0);
    let b = s.call(Method::GET, &path, None).await;
    let m = b["messages"].as_array().unwrap().iter().find(|m| m["id"] == "reply-1").unwrap().clone();
    assert_eq!(m["metadata"]["deliveryStatus"], "sent");
    assert_eq!(b["conversation"]["lastOutboundAt"], m["createdAt"]);

    // A PATCH repeated after it was sent queues nothing.
    s.call(Method::PATCH, &path, Some(reply("reply-1"))).await;
    assert_eq!(s.broker.depth(&queue).await, 0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_smtp_outage_a_dlq_replay_and_the_resend_route_send_each_failed_reply_once() {
    let port = free_port(); // nothing listens there yet
    let s = setup(port).await;
    let path = s.email_conversation().await;
    s.call(Method::PATCH, &path, Some(reply("reply-x"))).await;
    s.call(Method::PATCH, &path, Some(reply("reply-y"))).await;
    wait_until(60, "two dead letters", || async { s.broker.depth(&s.broker.topology.dead_queue).await == 2 }).await;
    let letters = s.broker.dead_letters().await;
    for dead in &letters {
        assert_eq!(dead.reason, "retries_exhausted");
        assert_eq!(dead.attempts, 3);
        assert!(dead.error.contains("smtp_unavailable"), "{}", dead.error);
    }
    assert_eq!(s.delivery("reply-x").await.0.as_deref(), Some("failed"));
    assert_eq!(s.delivery("reply-y").await.0.as_deref(), Some("failed"));
    assert_eq!(counter("intake_emails_sent_total"), 0.0);
    // The Message-ID was stored at the first claim; the re-send reuses it.
    let x_id = s.delivery("reply-x").await.1.expect("Message-ID stored before sending");

    // The server comes back; the operator replays reply-x's dead letter.
    let smtp = SmtpServer::start_on(port).await;
    let x_dead = letters.iter().find(|d| job_key(d) == "reply-x").unwrap();
    assert_eq!(s.broker.replay_dead(&intake::amqp::dlq::Selection::Ids(vec![x_dead.id.clone()])).await, 1);
    s.wait_for_state("reply-x", "sent").await;
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(message_id_of(&smtp.received()[0]), x_id);
    assert_eq!(counter("intake_emails_sent_total"), 1.0);

    // reply-y through the API.
    let resend = format!("{path}/messages/reply-y/resend");
    let (status, m) = s.call_raw(Method::POST, &resend, None).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{m}");
    assert_eq!(m["id"], "reply-y");
    // Possibly claimed by the sender already, as for the first reply above.
    assert!(matches!(m["metadata"]["deliveryStatus"].as_str(), Some("pending" | "sending")), "{m}");
    s.wait_for_state("reply-y", "sent").await;
    wait_until(30, "both mails", || async { smtp.received().len() == 2 }).await;
    let y_id = s.delivery("reply-y").await.1.unwrap();
    assert!(smtp.received().iter().any(|raw| message_id_of(raw) == y_id));
    let b = s.call(Method::GET, &path, None).await;
    assert_ne!(b["conversation"]["lastOutboundAt"], Value::Null);

    // Replaying reply-y's dead letter now sends nothing: it is acked as already sent.
    assert_eq!(s.broker.replay_dead(&intake::amqp::dlq::Selection::All).await, 1);
    wait_until(30, "the replayed job skipped", || async {
        counter(r#"intake_email_jobs_skipped_total{reason="already_sent"}"#) == 1.0
    })
    .await;
    assert_eq!(smtp.received().len(), 2);
    assert_eq!(counter("intake_emails_sent_total"), 2.0);
    assert_eq!(s.broker.depth(&s.broker.topology.dead_queue).await, 0);

    // Only failed or pending outbound email messages can be re-sent.
    let (status, body) = s.call_raw(Method::POST, &resend, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (reqwest::StatusCode::CONFLICT, Some("not_resendable")),
        "{body}"
    );
    let inbound = format!("{path}/messages/cust-1@customer.example/resend");
    let (status, body) = s.call_raw(Method::POST, &inbound, None).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    let (status, body) = s.call_raw(Method::POST, &format!("{path}/messages/nope/resend"), None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
    let other = format!("/internal/conversations/{}/messages/reply-x/resend", uuid::Uuid::new_v4());
    assert_eq!(s.call_raw(Method::POST, &other, None).await.0, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(smtp.received().len(), 2);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_senders_expired_claim_is_taken_over_and_a_live_claim_is_not() {
    let smtp = SmtpServer::start().await;
    let mut s = setup_without_worker(smtp.port, None).await;
    let path = s.email_conversation().await;
    s.call(Method::PATCH, &path, Some(reply("reply-dead"))).await;
    s.call(Method::PATCH, &path, Some(reply("reply-live"))).await;
    // A sender that died mid-send left its claim (and the Message-ID it generated); another
    // is busy sending right now.
    sqlx::query(
        "UPDATE messages SET delivery_state = 'sending', delivery_owner = 'gone-host:1:dead',
                delivery_lease_until = now() - interval '1 minute', external_id = 'claimed-by-the-dead@example.com'
          WHERE idempotency_key = 'reply-dead'",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE messages SET delivery_state = 'sending', delivery_owner = 'busy-host:2:alive',
                delivery_lease_until = now() + interval '1 hour'
          WHERE idempotency_key = 'reply-live'",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    s.start_worker().await;

    s.wait_for_state("reply-dead", "sent").await;
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(message_id_of(&smtp.received()[0]), "claimed-by-the-dead@example.com", "the claim's Message-ID");

    // The live claim's job is retried, then dead-lettered; nothing is sent or marked failed.
    wait_until(60, "a dead letter", || async { s.broker.depth(&s.broker.topology.dead_queue).await == 1 }).await;
    let dead = s.broker.dead_letters().await.remove(0);
    assert_eq!(job_key(&dead), "reply-live");
    assert_eq!(dead.reason, "retries_exhausted");
    assert_eq!(dead.attempts, 3, "retried");
    assert!(dead.error.contains("send_in_progress"), "{}", dead.error);
    let (state, _, owner) = s.delivery("reply-live").await;
    assert_eq!((state.as_deref(), owner.as_deref()), (Some("sending"), Some("busy-host:2:alive")));
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(counter("intake_emails_sent_total"), 1.0);

    // That sender dies too: once its lease ran out, the replayed job sends the reply once.
    sqlx::query(
        "UPDATE messages SET delivery_lease_until = now() - interval '1 second' WHERE idempotency_key = 'reply-live'",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(s.broker.replay_dead(&intake::amqp::dlq::Selection::All).await, 1);
    s.wait_for_state("reply-live", "sent").await;
    wait_until(30, "the second mail", || async { smtp.received().len() == 2 }).await;
    assert_eq!(counter("intake_emails_sent_total"), 2.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_references_are_capped_keeping_the_root_and_the_newest() {
    let smtp = SmtpServer::start().await;
    let s = setup(smtp.port).await;
    let path = s.email_conversation().await; // the root: cust-1@customer.example at 10:00
    for i in 1..60 {
        let m = json!({"message": {"id": format!("m{i:02}@customer.example"), "direction": "inbound",
            "body": format!("Mail {i}"), "createdAt": format!("2026-01-01T10:{i:02}:00Z"),
            "sender": {"id": "ada@customer.example", "primaryEmail": "ada@customer.example"}}});
        s.call(Method::PATCH, &path, Some(m)).await;
    }
    s.call(Method::PATCH, &path, Some(reply("reply-1"))).await;
    wait_until(30, "the reply at the SMTP server", || async { smtp.received().len() == 1 }).await;
    let raw = smtp.received().remove(0);
    let references = header(&raw, "References").unwrap();
    let ids: Vec<&str> = references.split_whitespace().collect();
    let max = intake::adapters::email::MAX_REFERENCES;
    assert_eq!(ids.len(), max, "{references}");
    assert_eq!(ids[0], "<cust-1@customer.example>", "the root stays");
    assert_eq!(ids[1], format!("<m{:02}@customer.example>", 60 - (max - 1)));
    assert_eq!(ids[max - 1], "<m59@customer.example>", "the newest last");
    assert_eq!(header(&raw, "In-Reply-To").as_deref(), Some("<m59@customer.example>"));
    s.finish().await;
}
