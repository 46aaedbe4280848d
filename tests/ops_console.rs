//! The ops console in a real headless browser (Debian's chromium through chromedriver, driven
//! with fantoccini) against the real `intake worker --with-api` binary: sign in, see a dead
//! letter and why, open it, register its entry point, replay it and find the conversation;
//! purge another through the confirmation; refuse a wrong token and forms without the CSRF
//! token; show hostile text escaped, never run.
//!
//! Without chromium and chromedriver the test says SKIPPED and passes (`.ci/run` installs them).
//! `INTAKE_OPS_SCREENSHOTS=<dir>` saves a PNG of each page (the README's come from here).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use uuid::Uuid;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const OPS_TOKEN: &str = "ops-token-0123456789";
const API_TOKEN: &str = "api-token-0123456789";
const XSS: &str = "<script>window.__xss=1</script>";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Browser {
    client: Client,
    base: String,
    shots: Option<PathBuf>,
}

impl Browser {
    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The page's visible text; retried, as a self-reloading page may be between two loads.
    async fn text(&self) -> String {
        for _ in 0..50 {
            if let Ok(body) = self.client.find(Locator::Css("body")).await {
                if let Ok(text) = body.text().await {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page has no readable body");
    }

    /// Wait until the page's text contains `what`.
    async fn wait_for_text(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text().await;
            if text.contains(what) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what:?}; the page says:\n{text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}")).click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    async fn xss_ran(&self) -> bool {
        let value = self.client.execute("return typeof window.__xss", vec![]).await.unwrap();
        value != json!("undefined")
    }
}

async fn start_browser(base: &str) -> (Browser, tokio::process::Child, tempdir::Dir) {
    let port = free_port();
    let driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let profile = tempdir::Dir::new();
    // The flags that keep Chromium off the network it does not have here (see the README).
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1280,900".into(),
        format!("--user-data-dir={}", profile.0.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        match ClientBuilder::native().capabilities(caps.clone()).connect(&url).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let client = client.expect("chromedriver answers");
    let shots = std::env::var_os("INTAKE_OPS_SCREENSHOTS").map(PathBuf::from).map(|dir| {
        let dir = if dir.is_relative() { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir) } else { dir };
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    (Browser { client, base: base.to_owned(), shots }, driver, profile)
}

/// A temporary directory removed on drop (Chromium's profile).
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("intake-ops-chromium-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn webhook(id: &str, body: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "conversationKey": "order-42", "direction": "inbound", "body": body,
        "sender": {"id": "cust-42", "displayName": "Grace Hopper"}, "occurredAt": "2026-11-30T09:00:00Z"}))
    .unwrap()
}

async fn dead_id(broker: &TestBroker, external: &str) -> String {
    let letters = broker.dead_letters().await;
    letters
        .iter()
        .find(|d| d.external_channel_id.as_deref() == Some(external))
        .unwrap_or_else(|| panic!("a dead letter for `{external}` in {letters:?}"))
        .id
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_console_in_a_real_browser() {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        return;
    }
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let http_port = free_port();
    let base = format!("http://127.0.0.1:{http_port}");
    let mut worker = worker_command(&db.url, &broker.topology)
        .arg("--with-api")
        .env("INTAKE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("INTAKE_API_TOKENS", format!("p:{API_TOKEN}"))
        .env("INTAKE_OPS_TOKENS", format!("ada:{OPS_TOKEN}"))
        .spawn()
        .expect("start intake worker");
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    wait_until(60, "the HTTP API", || async { http.get(format!("{base}/healthz")).send().await.is_ok() }).await;

    // Three dead letters: a message for an entry point not registered yet, a malformed one, and
    // one whose body and headers carry markup.
    broker.publish("webhook.webhook", Some("late-shop"), &webhook("evt-1", "Where is my order?")).await;
    broker.publish("webhook.webhook", Some("broken"), b"not json at all").await;
    let props = intake::amqp::publish::new_message_properties(
        &Uuid::new_v4().to_string(),
        "application/json",
        [
            (intake::amqp::envelope::EXTERNAL_CHANNEL_ID, XSS.to_owned()),
            ("x-note", format!("{XSS}<img src=x onerror=window.__xss=2>")),
        ],
    );
    broker
        .publisher
        .publish(&broker.topology.exchange, "webhook.webhook", &webhook("evt-x", XSS), props)
        .await
        .unwrap();
    wait_until(60, "3 dead letters", || async { broker.depth(&broker.topology.dead_queue).await == 3 }).await;
    let late_id = dead_id(&broker, "late-shop").await;
    let broken_id = dead_id(&broker, "broken").await;
    let xss_id = dead_id(&broker, XSS).await;

    let (browser, mut driver, _profile) = start_browser(&base).await;

    // Not signed in: the sign-in page; a wrong token is refused.
    browser.goto("/ops").await;
    browser.wait_for_text("Sign in with an ops token").await;
    browser.screenshot("sign-in").await;
    browser.type_into("#token", "not-the-token-at-all").await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("That token is not valid.").await;
    let refused =
        http.post(format!("{base}/ops/sign-in")).form(&[("token", "not-the-token-at-all")]).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    // Sign in: the overview.
    browser.type_into("#token", OPS_TOKEN).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("signed in as ada").await;
    browser.wait_for_text("Queues").await;
    browser.screenshot("overview").await;

    // The dead letters with their reasons; the hostile one escaped, its script never run.
    browser.goto("/ops/dead-letters").await;
    let list = browser.wait_for_text("unknown_entry_point").await;
    assert!(list.contains("malformed_payload"), "{list}");
    assert!(list.contains(&format!("webhook / {XSS}")), "markup shown as text: {list}");
    assert!(!browser.xss_ran().await, "a script in a dead letter ran on the list");
    browser.screenshot("dead-letters").await;

    // The hostile one in detail: headers and payload as text.
    browser.goto(&format!("/ops/dead-letters/{xss_id}")).await;
    let detail = browser.wait_for_text("x-note").await;
    assert!(detail.contains(&format!("{XSS}<img src=x onerror=window.__xss=2>")), "{detail}");
    assert!(detail.contains(&format!("\"body\": \"{XSS}\"")), "pretty JSON payload as text: {detail}");
    assert!(!browser.xss_ran().await, "a script in a dead letter ran on its detail page");
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains("<img src=\"x\""), "no element made from the payload");

    // Open the dead letter from the list, register its entry point, replay it.
    browser.goto("/ops/dead-letters").await;
    browser.click(&format!("a[href='/ops/dead-letters/{late_id}']")).await;
    let detail = browser.wait_for_text("Payload").await;
    assert!(detail.contains("unknown_entry_point") && detail.contains("late-shop"), "{detail}");
    browser.screenshot("dead-letter").await;
    let registered = http
        .post(format!("{base}/internal/entry-points"))
        .bearer_auth(API_TOKEN)
        .json(&json!({"channelType": "webhook", "adapterKey": "webhook", "externalChannelId": "late-shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    browser.click("button[value=replay-selected]").await;
    let confirm = browser.wait_for_text("Replay 1 dead letter?").await;
    assert!(confirm.contains(&late_id), "{confirm}");
    browser.screenshot("confirm").await;
    browser.type_into("#rate", "20").await;
    browser.click("#run").await;
    browser.wait_for_text("finished").await;
    let progress = browser.wait_for_text("1 of 1 expected").await;
    assert!(progress.contains("started by ada") && progress.contains("limit 20/s"), "{progress}");
    browser.screenshot("progress").await;
    wait_until(60, "the replayed message stored", || async {
        count(&db.pool, "SELECT count(*) FROM messages WHERE body = 'Where is my order?'").await == 1
    })
    .await;

    // The conversation it made, through the console's search and timeline.
    browser.goto("/ops/conversations?project=p&query=grace").await;
    browser.wait_for_text("Grace Hopper").await;
    browser.screenshot("conversations").await;
    browser.click("#conversations tbody a").await;
    let timeline = browser.wait_for_text("Timeline").await;
    assert!(timeline.contains("Where is my order?") && timeline.contains("webhook / late-shop"), "{timeline}");
    browser.screenshot("conversation").await;

    // Purge the malformed one: everything matching a filter, through the confirmation.
    browser.goto("/ops/dead-letters?reason=malformed_payload").await;
    browser.wait_for_text("1 match").await;
    browser.click("button[value=purge-matching]").await;
    browser.wait_for_text("Purge 1 dead letter?").await;
    browser.click("#run").await;
    browser.wait_for_text("finished").await;
    let left: Vec<String> = broker.dead_letters().await.into_iter().map(|d| d.id).collect();
    assert_eq!(left, [xss_id], "the replayed and the purged one are gone, {broken_id} among them");

    // Forms without this session's CSRF token are refused (403) and change nothing; without a
    // session, 401.
    let session = browser.client.get_named_cookie("intake_ops").await.unwrap();
    let cookie = format!("intake_ops={}", session.value());
    for form in [
        vec![("action", "purge"), ("scope", "matching")],
        vec![("action", "purge"), ("scope", "matching"), ("csrf", "forged")],
    ] {
        let answer = http
            .post(format!("{base}/ops/dead-letters/run"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403);
    }
    let answer = http
        .post(format!("{base}/ops/dead-letters/run"))
        .form(&[("action", "purge"), ("scope", "matching")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 1, "nothing purged by a refused form");
    // The page itself answers with the flags the README promises.
    let page = http.get(format!("{base}/ops/dead-letters")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let signed_in = http.post(format!("{base}/ops/sign-in")).form(&[("token", OPS_TOKEN)]).send().await.unwrap();
    let set_cookie = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict") && set_cookie.contains("Path=/ops")
    );

    // Sign out: the session is gone.
    browser.goto("/ops").await;
    browser.click("form.sign-out button").await;
    browser.wait_for_text("Sign in with an ops token").await;
    let after = http.get(format!("{base}/ops")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 303, "signed out: back to sign-in");

    let _ = browser.client.close().await;
    let _ = driver.kill().await;
    let _ = worker.kill().await;
    broker.cleanup().await;
}

/// `intake dlq` with the console's filters and `--rate`: only what matches is replayed, paced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_cli_replays_what_the_filters_match_at_the_given_rate() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let mut worker = worker_command(&db.url, &broker.topology).spawn().expect("start intake worker");
    for i in 0..6 {
        broker.publish("webhook.webhook", Some("late"), &webhook(&format!("evt-{i}"), "hello")).await;
    }
    broker.publish("webhook.webhook", Some("other"), &webhook("evt-o", "hello")).await;
    wait_until(60, "7 dead letters", || async { broker.depth(&broker.topology.dead_queue).await == 7 }).await;
    // No worker: replayed messages wait in their queue, where the test counts them.
    worker.kill().await.unwrap();
    let dlq = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_intake"));
        command
            .arg("dlq")
            .args(args)
            .env("AMQP_URL", AMQP_URL)
            .env("INTAKE_EXCHANGE", &broker.topology.exchange)
            .env("INTAKE_QUEUE_PREFIX", &broker.topology.queue_prefix)
            .env("INTAKE_DEAD_QUEUE", &broker.topology.dead_queue)
            .env("INTAKE_RETRY_DELAYS", "200ms,400ms");
        command
    };
    let refused = dlq(&["replay"]).output().await.unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("say which dead letters"));

    let started = std::time::Instant::now();
    let out =
        dlq(&["replay", "--external-channel-id", "late", "--text", "HELLO", "--rate", "10/s"]).output().await.unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 6 dead letter(s)"));
    // Six at 10/s: five 100 ms gaps at least.
    assert!(took >= Duration::from_millis(500), "paced: {took:?}");
    assert_eq!(broker.depth(&broker.topology.queue(intake::adapters::ChannelType::Webhook)).await, 6);
    let left = broker.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].external_channel_id.as_deref(), Some("other"));
    broker.cleanup().await;
}
