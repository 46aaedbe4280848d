//! `intake smtpd` against real RabbitMQ and PostgreSQL, driven by real clients: Python's
//! `smtplib` for SMTP (and STARTTLS), a line client for LMTP. A mail ends as a stored message
//! through the real worker; it is answered `250` only after the broker confirmed it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use intake::adapters::{AdapterRegistry, ChannelType};
use intake::amqp::publish::LazyPublisher;
use intake::smtpd::{self, SmtpdSettings, SmtpdState};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const DEAD_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn settings(lmtp: bool) -> SmtpdSettings {
    SmtpdSettings {
        hostname: "mx.test".into(),
        lmtp,
        max_message_bytes: 64 * 1024,
        max_recipients: 10,
        max_sessions: 20,
        command_timeout: Duration::from_secs(20),
        data_timeout: Duration::from_secs(20),
        publish_timeout: Duration::from_secs(10),
        max_errors: 10,
    }
}

/// A listener on a free loopback port publishing through `amqp_url` to `broker`'s exchange.
async fn spawn_smtpd(
    db: &TestDb,
    broker: &TestBroker,
    amqp_url: &str,
    settings: SmtpdSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_smtpd(listener, db, broker, amqp_url, settings, tls, std::future::pending()));
    addr
}

fn serve_smtpd(
    listener: tokio::net::TcpListener,
    db: &TestDb,
    broker: &TestBroker,
    amqp_url: &str,
    settings: SmtpdSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
    let publisher = Arc::new(LazyPublisher::new(amqp_url).declaring(broker.topology.clone()));
    let state = Arc::new(SmtpdState {
        pool: db.pool.clone(),
        publisher,
        exchange: broker.topology.exchange.clone(),
        settings,
        tls,
    });
    smtpd::serve(listener, state, shutdown)
}

async fn mailboxes(db: &TestDb, addresses: &[&str]) {
    for address in addresses {
        db.project_with_entry_point("acme", ChannelType::Email, "email", address).await;
    }
}

fn mail(message_id: &str, to: &str, body: &str) -> String {
    format!(
        "From: Ada Customer <ada@example.org>\r\nTo: {to}\r\nSubject: Order 7\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{message_id}@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

/// Python's smtplib, step by step; prints the reply code of each step as JSON.
const SMTPLIB_CLIENT: &str = r#"
import json, smtplib, ssl, sys
a = json.loads(sys.argv[1])
out = {}
s = smtplib.SMTP(a["host"], a["port"], timeout=30)
s.ehlo("client.example.org")
out["features"] = s.esmtp_features
if a.get("cafile"):
    out["starttls"] = s.starttls(context=ssl.create_default_context(cafile=a["cafile"]))[0]
    s.ehlo("client.example.org")
    out["features_after_tls"] = s.esmtp_features
code, _ = s.mail(a["from"], [f"SIZE={a['size']}"] if a.get("size") else [])
out["mail"] = code
out["rcpt"] = [s.rcpt(r)[0] for r in a["rcpts"]] if code == 250 else []
if 250 in out["rcpt"]:
    try:
        code, msg = s.data(a["data"].encode())
    except smtplib.SMTPDataError as e:
        code, msg = e.smtp_code, e.smtp_error
    out["data"] = code
    out["data_reply"] = msg.decode(errors="replace")
try:
    s.quit()
except Exception:
    pass
print(json.dumps(out))
"#;

async fn smtplib(args: Value) -> Value {
    let output = tokio::process::Command::new("python3")
        .args(["-c", SMTPLIB_CLIENT, &args.to_string()])
        .output()
        .await
        .expect("python3");
    assert!(output.status.success(), "smtplib client failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn send(addr: SocketAddr, rcpts: &[&str], data: &str) -> Value {
    json!({"host": "127.0.0.1", "port": addr.port(), "from": "ada@example.org", "rcpts": rcpts, "data": data})
}

async fn stored_messages(db: &TestDb) -> i64 {
    count(&db.pool, "SELECT count(*) FROM messages").await
}

async fn email_queue_depth(broker: &TestBroker) -> u32 {
    broker.depth(&broker.topology.queue(ChannelType::Email)).await
}

#[tokio::test]
async fn smtplib_mail_is_stored_and_answered_after_the_confirm() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let worker = start_worker_with(&db.url, &broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let addr = spawn_smtpd(&db, &broker, AMQP_URL, settings(false), None).await;

    // Case folding and a plus tag, as the email adapter does.
    let out =
        smtplib(send(addr, &["Support+Order7@Example.COM"], &mail("m1", "support@example.com", "Where is it?"))).await;
    assert_eq!(out["features"]["size"], "65536", "{out}");
    assert!(out["features"].get("pipelining").is_some() && out["features"].get("starttls").is_none(), "{out}");
    assert_eq!(
        (out["mail"].as_i64(), out["rcpt"].clone(), out["data"].as_i64()),
        (Some(250), json!([250]), Some(250)),
        "{out}"
    );

    wait_until(20, "the mail stored", || async { stored_messages(&db).await == 1 }).await;
    let (body, metadata): (String, Value) =
        sqlx::query_as("SELECT body, metadata FROM messages").fetch_one(&db.pool).await.unwrap();
    assert!(body.contains("Where is it?"), "{body}");
    assert_eq!(metadata["messageId"], "m1@example.org", "{metadata}");
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn unknown_recipients_get_550_and_over_size_mail_gets_552() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let addr = spawn_smtpd(&db, &broker, AMQP_URL, settings(false), None).await;

    let out = smtplib(send(addr, &["nobody@example.com"], &mail("u1", "nobody@example.com", "hi"))).await;
    assert_eq!(out["rcpt"], json!([550]), "{out}");
    assert!(out.get("data").is_none(), "{out}");

    // Declared too large: refused at MAIL FROM.
    let mut declared = send(addr, &["support@example.com"], &mail("s1", "support@example.com", "hi"));
    declared["size"] = json!(1_000_000);
    let out = smtplib(declared).await;
    assert_eq!(out["mail"], 552, "{out}");

    // Undeclared and too large: read to the end, then refused.
    let big = mail("s2", "support@example.com", &vec!["x".repeat(76); 1500].join("\r\n"));
    let out = smtplib(send(addr, &["support@example.com"], &big)).await;
    assert_eq!(out["data"], 552, "{out}");
    assert!(out["data_reply"].as_str().unwrap().starts_with("5.3.4"), "{out}");

    // Just over the limit, ending in the same read that crossed it.
    let mut small = settings(false);
    small.max_message_bytes = 2000;
    let tight = spawn_smtpd(&db, &broker, AMQP_URL, small, None).await;
    let (mut client, _) = LineClient::connect(tight).await;
    client.send("EHLO client").await;
    client.send("MAIL FROM:<ada@example.org>").await;
    assert!(client.send("RCPT TO:<support@example.com>").await.starts_with("250"));
    assert!(client.send("DATA").await.starts_with("354"));
    let head = mail("s3", "support@example.com", "").len();
    let just_over = mail("s3", "support@example.com", &"y".repeat(2010 - head));
    assert!(just_over.len() > 2000 && just_over.len() < 2100);
    let answer = client.send(&format!("{just_over}.")).await;
    assert!(answer.starts_with("552 5.3.4"), "{answer}");

    // The session is still usable, and nothing was published.
    let out = smtplib(send(addr, &["support@example.com"], &mail("ok", "support@example.com", "hi"))).await;
    assert_eq!(out["data"], 250, "{out}");
    assert_eq!(email_queue_depth(&broker).await, 1);
    broker.cleanup().await;
}

#[tokio::test]
async fn broker_unreachable_gets_451_and_the_retry_is_stored_once() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let worker = start_worker_with(&db.url, &broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let message = mail("retry1", "support@example.com", "Are you there?");

    // RabbitMQ unreachable (a closed port): the MTA must keep the mail.
    let down = spawn_smtpd(&db, &broker, DEAD_AMQP_URL, settings(false), None).await;
    let out = smtplib(send(down, &["support@example.com"], &message)).await;
    assert_eq!(out["rcpt"], json!([250]), "{out}");
    assert_eq!(out["data"], 451, "{out}");
    assert!(out["data_reply"].as_str().unwrap().starts_with("4.3.0"), "{out}");

    // A broker that takes the connection and never answers: no confirm within the publish
    // timeout is a 451 too.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut impatient = settings(false);
    impatient.publish_timeout = Duration::from_secs(1);
    let hung = spawn_smtpd(&db, &broker, &silent_url, impatient, None).await;
    let started = std::time::Instant::now();
    let out = smtplib(send(hung, &["support@example.com"], &message)).await;
    assert_eq!(out["data"], 451, "{out}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered within the publish timeout");

    // The MTA retries once the broker is back.
    let up = spawn_smtpd(&db, &broker, AMQP_URL, settings(false), None).await;
    let out = smtplib(send(up, &["support@example.com"], &message)).await;
    assert_eq!(out["data"], 250, "{out}");
    wait_until(20, "the retried mail stored", || async { stored_messages(&db).await == 1 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_messages(&db).await, 1, "nothing twice");
    worker.stop().await;
    broker.cleanup().await;
}

/// A line client: one command, its (possibly multi-line) reply.
struct LineClient {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl LineClient {
    async fn connect(addr: SocketAddr) -> (Self, String) {
        let (read, writer) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
        let mut client = LineClient { reader: BufReader::new(read), writer };
        let greeting = client.reply().await;
        (client, greeting)
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, command: &str) -> String {
        self.writer.write_all(command.as_bytes()).await.unwrap();
        self.writer.write_all(b"\r\n").await.unwrap();
        self.reply().await
    }
}

#[tokio::test]
async fn lmtp_answers_per_recipient_and_publishes_once_per_mailbox() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    // Two projects: within one project, copies of one mail (one Message-ID) are one message.
    mailboxes(&db, &["support@example.com"]).await;
    db.project_with_entry_point("globex", ChannelType::Email, "email", "sales@example.com").await;
    let worker = start_worker_with(&db.url, &broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let addr = spawn_smtpd(&db, &broker, AMQP_URL, settings(true), None).await;

    let (mut lmtp, greeting) = LineClient::connect(addr).await;
    assert!(greeting.starts_with("220 mx.test LMTP"), "{greeting}");
    assert!(lmtp.send("EHLO client").await.starts_with("500"), "LMTP takes LHLO");
    assert!(lmtp.send("LHLO client").await.contains("250-SIZE 65536"));
    assert!(lmtp.send("MAIL FROM:<ada@example.org>").await.starts_with("250"));
    assert!(lmtp.send("RCPT TO:<support@example.com>").await.starts_with("250 2.1.5"));
    assert!(lmtp.send("RCPT TO:<Support+x@example.com>").await.starts_with("250 2.1.5"));
    assert!(lmtp.send("RCPT TO:<sales@example.com>").await.starts_with("250 2.1.5"));
    assert!(lmtp.send("RCPT TO:<nobody@example.com>").await.starts_with("550 5.1.1"));
    assert!(lmtp.send("DATA").await.starts_with("354"));
    let data = mail("lmtp1", "support@example.com, sales@example.com", "..a dot-stuffed line");
    lmtp.writer.write_all(data.replace("\r\n..a", "\r\n...a").as_bytes()).await.unwrap();
    let first = lmtp.send(".").await;
    let replies = [first, lmtp.reply().await, lmtp.reply().await];
    for r in &replies {
        assert!(r.starts_with("250 2.0.0"), "{replies:?}");
    }
    assert!(lmtp.send("QUIT").await.starts_with("221"));

    wait_until(20, "one message per mailbox", || async { stored_messages(&db).await == 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_messages(&db).await, 2);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM messages").fetch_all(&db.pool).await.unwrap();
    assert!(bodies.iter().all(|b| b.contains("..a dot-stuffed line") && !b.contains("...a")), "{bodies:?}");
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn starttls_with_a_configured_certificate() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let dir = std::env::temp_dir().join(format!("intake-smtpd-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let acceptor = smtpd::tls::acceptor(&cert, &key).unwrap();
    let addr = spawn_smtpd(&db, &broker, AMQP_URL, settings(false), Some(acceptor)).await;

    let mut args = send(addr, &["support@example.com"], &mail("tls1", "support@example.com", "secret"));
    args["host"] = json!("localhost");
    args["cafile"] = json!(cert);
    let out = smtplib(args).await;
    assert!(out["features"].get("starttls").is_some(), "{out}");
    assert_eq!(out["starttls"], 220, "{out}");
    assert!(out["features_after_tls"].get("starttls").is_none(), "not offered twice: {out}");
    assert_eq!(out["data"], 250, "{out}");
    assert_eq!(email_queue_depth(&broker).await, 1);
    std::fs::remove_dir_all(&dir).unwrap();
    broker.cleanup().await;
}

#[test]
fn a_non_loopback_address_needs_tls_or_an_explicit_allowance() {
    let public: SocketAddr = "0.0.0.0:2525".parse().unwrap();
    assert!(smtpd::check_bind(public, false, false).is_err());
    assert!(smtpd::check_bind(public, true, false).is_ok());
    assert!(smtpd::check_bind(public, false, true).is_ok());
    assert!(smtpd::check_bind("127.0.0.1:2525".parse().unwrap(), false, false).is_ok());
    assert!(smtpd::check_bind("[::1]:2525".parse().unwrap(), false, false).is_ok());
}

#[tokio::test]
async fn sessions_are_limited_in_number_and_idle_time() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    let mut limited = settings(false);
    limited.max_sessions = 1;
    limited.command_timeout = Duration::from_millis(500);
    let addr = spawn_smtpd(&db, &broker, AMQP_URL, limited, None).await;

    let (mut first, greeting) = LineClient::connect(addr).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let (_, refused) = LineClient::connect(addr).await;
    assert!(refused.starts_with("421 4.3.2"), "{refused}");
    // Silent past the command timeout: told so and disconnected; the slot is free again.
    assert!(first.reply().await.starts_with("421 4.4.2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut again, greeting) = LineClient::connect(addr).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    // A line over the limit, spanning reads: one answer, and its rest is not read as commands.
    let long = format!("NOOP {}", "x".repeat(100_000));
    let answer = again.send(&long).await;
    assert!(answer.starts_with("500 5.5.2"), "{answer}");
    assert!(again.send("NOOP").await.starts_with("250"));
    broker.cleanup().await;
}

/// A real Postfix (Debian's package) with its own configuration, queue and ports in a temporary
/// directory, relaying everything for example.com to intake over LMTP. Never touches the
/// system's Postfix configuration or port 25; stopped and removed on drop.
struct Postfix {
    dir: std::path::PathBuf,
    smtp_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postfix {
    fn available() -> bool {
        std::path::Path::new("/usr/sbin/postfix").exists()
    }

    async fn start(lmtp_port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("intake-postfix-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let smtp_port = free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {d}/queue\n\
                 data_directory = {d}/data\n\
                 maillog_file = {d}/maillog\n\
                 maillog_file_prefixes = {d}\n\
                 myhostname = relay.test\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mydestination =\n\
                 mynetworks = 127.0.0.0/8\n\
                 relay_domains = example.com\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 transport_maps = inline:{{ example.com=lmtp:inet:127.0.0.1:{lmtp_port} }}\n\
                 lmtp_connection_cache_on_demand = no\n\
                 queue_run_delay = 1s\n\
                 minimal_backoff_time = 1s\n\
                 maximal_backoff_time = 2s\n\
                 smtputf8_enable = no\n\
                 biff = no\n"
            ),
        )
        .unwrap();
        let services = [
            format!("127.0.0.1:{smtp_port} inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup".into(),
            "cleanup unix n - n - 0 cleanup".into(),
            "qmgr unix n - n 300 1 qmgr".into(),
            "rewrite unix - - n - - trivial-rewrite".into(),
            "bounce unix - - n - 0 bounce".into(),
            "defer unix - - n - 0 bounce".into(),
            "trace unix - - n - 0 bounce".into(),
            "verify unix - - n - 1 verify".into(),
            "flush unix n - n 1000? 0 flush".into(),
            "proxymap unix - - n - - proxymap".into(),
            "smtp unix - - n - - smtp".into(),
            "relay unix - - n - - smtp".into(),
            "showq unix n - n - - showq".into(),
            "error unix - - n - - error".into(),
            "retry unix - - n - - error".into(),
            "discard unix - - n - - discard".into(),
            "lmtp unix - - n - - lmtp".into(),
            "anvil unix - - n - 1 anvil".into(),
            "scache unix - - n - 1 scache".into(),
            "postlog unix-dgram n - n - 1 postlogd".into(),
        ];
        std::fs::write(dir.join("master.cf"), services.join("\n") + "\n").unwrap();
        // Postfix creates the queue's subdirectories itself; the data directory is its user's.
        std::fs::create_dir_all(dir.join("queue")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let chown = std::process::Command::new("chown").arg("postfix").arg(dir.join("data")).status().unwrap();
        assert!(chown.success());
        let postfix = Postfix { dir, smtp_port };
        let out = postfix.command("start");
        assert!(
            out.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until(30, "Postfix listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", smtp_port)).await.is_ok()
        })
        .await;
        postfix
    }

    fn command(&self, action: &str) -> std::process::Output {
        std::process::Command::new("/usr/sbin/postfix").arg("-c").arg(&self.dir).arg(action).output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.command("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A mail given to Postfix reaches intake over LMTP; while RabbitMQ is unreachable intake
/// answers 451, Postfix keeps the mail, and delivers it once intake can publish again.
#[tokio::test]
async fn postfix_relays_over_lmtp_and_keeps_the_mail_while_the_broker_is_down() {
    if !Postfix::available() {
        eprintln!("SKIPPED: Debian's postfix is not installed (apt-get install postfix)");
        return;
    }
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let worker = start_worker_with(&db.url, &broker, AdapterRegistry::with_defaults(), |_| {}).await;

    // intake's LMTP port, first with RabbitMQ unreachable.
    let lmtp_port = free_port();
    let down = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", lmtp_port)).await.unwrap();
    let stopped = down.clone().cancelled_owned();
    let dead = tokio::spawn(serve_smtpd(listener, &db, &broker, DEAD_AMQP_URL, settings(true), None, stopped));
    let postfix = Postfix::start(lmtp_port).await;

    let mut args = send(
        "127.0.0.1:0".parse().unwrap(),
        &["support@example.com"],
        &mail("pf1", "support@example.com", "via Postfix"),
    );
    args["port"] = json!(postfix.smtp_port);
    let out = smtplib(args).await;
    assert_eq!(out["data"], 250, "Postfix queued it: {out}");
    wait_until(30, "Postfix told to retry", || async { postfix.log().contains("4.3.0") }).await;
    assert_eq!(stored_messages(&db).await, 0);

    // The broker is back: Postfix's next attempt succeeds, and the mail is stored once.
    down.cancel();
    dead.await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", lmtp_port)).await.unwrap();
    tokio::spawn(serve_smtpd(listener, &db, &broker, AMQP_URL, settings(true), None, std::future::pending()));
    // Postfix retries on its own (1-2 s backoff here); `postfix flush` only shortens the wait
    // when its queue manager has throttled the destination.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    while stored_messages(&db).await != 1 {
        assert!(std::time::Instant::now() < deadline, "not delivered; Postfix log:\n{}", postfix.log());
        polls += 1;
        if polls % 50 == 0 {
            postfix.command("flush");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(10, "Postfix logged the delivery", || async { postfix.log().contains("status=sent") }).await;
    let log = postfix.log();
    assert!(log.contains("relay=127.0.0.1[127.0.0.1]:") && log.contains("250 2.0.0 queued as"), "{log}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_messages(&db).await, 1, "nothing twice");
    worker.stop().await;
    broker.cleanup().await;
}

/// The real `intake smtpd` process, configured from the environment like a deployment.
#[tokio::test]
async fn the_intake_smtpd_command_receives_mail_and_refuses_plaintext_on_a_public_address() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let worker = start_worker_with(&db.url, &broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let command = |addr: String| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_intake"));
        command
            .arg("smtpd")
            .env("DATABASE_URL", &db.url)
            .env("AMQP_URL", AMQP_URL)
            .env("INTAKE_EXCHANGE", &broker.topology.exchange)
            .env("INTAKE_QUEUE_PREFIX", &broker.topology.queue_prefix)
            .env("INTAKE_DEAD_QUEUE", &broker.topology.dead_queue)
            .env("INTAKE_RETRY_DELAYS", "200ms,400ms")
            .env("INTAKE_SMTPD_ADDR", addr)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    };

    let refused =
        command(format!("0.0.0.0:{}", free_port())).stderr(std::process::Stdio::piped()).output().await.unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("without TLS"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let port = free_port();
    let _smtpd = command(format!("127.0.0.1:{port}")).stderr(std::process::Stdio::inherit()).spawn().unwrap();
    wait_until(30, "intake smtpd listening", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let out =
        smtplib(send(addr, &["support@example.com"], &mail("proc1", "support@example.com", "from the process"))).await;
    assert_eq!(out["data"], 250, "{out}");
    wait_until(20, "the mail stored", || async { stored_messages(&db).await == 1 }).await;
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn shutdown_tells_waiting_clients_421_and_finishes() {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    mailboxes(&db, &["support@example.com"]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve_smtpd(
        listener,
        &db,
        &broker,
        AMQP_URL,
        settings(false),
        None,
        stop.clone().cancelled_owned(),
    ));
    let (mut client, _) = LineClient::connect(addr).await;
    client.send("EHLO client").await;
    assert!(client.send("MAIL FROM:<ada@example.org>").await.starts_with("250"));
    stop.cancel();
    assert!(client.reply().await.starts_with("421 4.3.2"), "an unfinished transaction is retried later");
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("serve returns").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
    assert_eq!(email_queue_depth(&broker).await, 0);
    broker.cleanup().await;
}
