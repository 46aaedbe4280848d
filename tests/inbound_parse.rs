//! Inbound-parse webhooks of the mail providers, through real RabbitMQ, PostgreSQL and the
//! worker: a correctly authenticated post ends as a stored message; a wrongly signed one gets
//! 401 and nothing is published. Payload shapes follow each provider's documentation (noted
//! per test).

mod common;

use std::sync::Arc;

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use intake::adapters::{AdapterRegistry, ChannelType};
use intake::amqp::publish::LazyPublisher;
use intake::inbound_parse::{self, InboundMailArgs, InboundMailState};
use serde_json::{json, Value};

const MAILGUN_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
const MANDRILL_KEY: &str = "mandrill-webhook-key-123";
const SENDGRID_AUTH: &str = "sendgrid:parse-secret";
const POSTMARK_AUTH: &str = "postmark:inbound-secret";
const PUBLIC_URL: &str = "https://hooks.example.com";

struct Setup {
    db: TestDb,
    broker: TestBroker,
    worker: RunningWorker,
    url: String,
    client: reqwest::Client,
}

async fn setup() -> Setup {
    let (db, broker) = (TestDb::new().await, TestBroker::new().await);
    db.project_with_entry_point("acme", ChannelType::Email, "email", "support@example.com").await;
    let worker = start_worker_with(&db.url, &broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let router = inbound_parse::router(InboundMailState {
        pool: db.pool.clone(),
        publisher: Arc::new(LazyPublisher::new(AMQP_URL).declaring(broker.topology.clone())),
        exchange: broker.topology.exchange.clone(),
        credentials: InboundMailArgs {
            mailgun_signing_key: Some(MAILGUN_KEY.into()),
            sendgrid_inbound_auth: Some(SENDGRID_AUTH.into()),
            postmark_inbound_auth: Some(POSTMARK_AUTH.into()),
            mandrill_webhook_keys: vec![MANDRILL_KEY.into()],
            inbound_mail_body_limit: 1 << 20,
        },
        public_url: Some(PUBLIC_URL.into()),
        tolerance_secs: 300,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(intake::http::serve_router(listener, router, std::future::pending()));
    Setup { db, broker, worker, url, client: reqwest::Client::new() }
}

impl Setup {
    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>, headers: &[(&str, String)]) -> (u16, Value) {
        let mut request =
            self.client.post(format!("{}{path}", self.url)).header("content-type", content_type).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn nothing_published(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(self.broker.depth(&self.broker.topology.queue(ChannelType::Email)).await, 0);
        assert_eq!(count(&self.db.pool, "SELECT count(*) FROM messages").await, 0);
    }

    /// The one stored message: (subject, body, metadata).
    async fn stored(&self) -> (Option<String>, String, Value) {
        wait_until(20, "the mail stored", || async {
            count(&self.db.pool, "SELECT count(*) FROM messages").await == 1
        })
        .await;
        sqlx::query_as("SELECT subject, body, metadata FROM messages").fetch_one(&self.db.pool).await.unwrap()
    }

    async fn finish(self) {
        self.worker.stop().await;
        self.broker.cleanup().await;
    }
}

fn raw_mail(message_id: &str) -> String {
    format!(
        "From: Ada Customer <ada@example.org>\r\nTo: support@example.com\r\nSubject: Order 7\r\n\
         Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}@example.org>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nWhere is my order?\r\n"
    )
}

/// A `multipart/form-data` body as browsers and providers send it.
fn multipart(fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "----intake-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body.into_bytes())
}

fn basic(credentials: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
}

/// Mailgun forward() to a URL ending in `mime`: `recipient`, `sender`, `body-mime`, and
/// `timestamp`/`token`/`signature` (docs: "Receiving Messages via HTTP", "Securing Webhooks").
#[tokio::test]
async fn mailgun_signed_post_is_stored_and_a_bad_signature_gets_401() {
    let s = setup().await;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    let sign = |key: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}{token}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let raw = raw_mail("mg1");
    let form = |signature: &str| {
        multipart(&[
            ("recipient", "Support@example.com"),
            ("sender", "ada@example.org"),
            ("from", "Ada Customer <ada@example.org>"),
            ("subject", "Order 7"),
            ("body-mime", &raw),
            ("timestamp", &timestamp),
            ("token", token),
            ("signature", signature),
        ])
    };

    let (content_type, body) = form(&sign("another-key"));
    let (status, answer) = s.post("/hooks/inbound-mail/mailgun/mime", &content_type, body, &[]).await;
    assert_eq!(status, 401, "{answer}");
    s.nothing_published().await;

    let (content_type, body) = form(&sign(MAILGUN_KEY));
    let (status, answer) = s.post("/hooks/inbound-mail/mailgun/mime", &content_type, body, &[]).await;
    assert_eq!((status, answer["published"].as_i64()), (200, Some(1)), "{answer}");
    let (subject, body, _) = s.stored().await;
    assert_eq!((subject.as_deref(), body.trim()), (Some("Order 7"), "Where is my order?"));
    s.finish().await;
}

/// SendGrid Inbound Parse with "POST the raw, full MIME message": `email` is the message,
/// `envelope` the SMTP envelope (docs: "Inbound Parse Webhook", raw parameters). Not signed:
/// basic auth in the configured URL.
#[tokio::test]
async fn sendgrid_raw_post_with_basic_auth_is_stored_and_wrong_credentials_get_401() {
    let s = setup().await;
    let raw = raw_mail("sg1");
    let envelope = json!({"to": ["support@example.com"], "from": "ada@example.org"}).to_string();
    let (content_type, body) = multipart(&[
        ("headers", "Received: by mx0047p1mdw1.sendgrid.net\nSubject: Order 7\n"),
        ("dkim", "{@example.org : pass}"),
        ("email", &raw),
        ("to", "support@example.com"),
        ("from", "Ada Customer <ada@example.org>"),
        ("subject", "Order 7"),
        ("sender_ip", "192.0.2.10"),
        ("envelope", &envelope),
        ("charsets", r#"{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}"#),
        ("SPF", "pass"),
    ]);

    for wrong in [vec![], vec![("authorization", basic("sendgrid:guess"))]] {
        let (status, answer) = s.post("/hooks/inbound-mail/sendgrid", &content_type, body.clone(), &wrong).await;
        assert_eq!(status, 401, "{answer}");
    }
    s.nothing_published().await;

    let auth = [("authorization", basic(SENDGRID_AUTH))];
    let (status, answer) = s.post("/hooks/inbound-mail/sendgrid", &content_type, body, &auth).await;
    assert_eq!(status, 200, "{answer}");
    let (subject, _, _) = s.stored().await;
    assert_eq!(subject.as_deref(), Some("Order 7"));
    s.finish().await;
}

/// Postmark's inbound JSON, as in its docs' example ("Inbound webhook"), without `RawEmail`:
/// the message is rebuilt from the fields, keeping the original Message-ID from `Headers`.
fn postmark_payload(raw_email: Option<&str>) -> Value {
    let mut payload = json!({
        "FromName": "Ada Customer",
        "MessageStream": "inbound",
        "From": "ada@example.org",
        "FromFull": {"Email": "ada@example.org", "Name": "Ada Customer", "MailboxHash": ""},
        "To": "\"Support\" <support+order7@example.com>",
        "ToFull": [{"Email": "support+order7@example.com", "Name": "Support", "MailboxHash": "order7"}],
        "Cc": "", "CcFull": [], "Bcc": "", "BccFull": [],
        "OriginalRecipient": "support+order7@example.com",
        "Subject": "Commande n° 7",
        "MessageID": "73e6d360-66eb-11e1-8e72-a8904824019b",
        "ReplyTo": "",
        "MailboxHash": "order7",
        "Date": "Wed, 2 Dec 2026 10:00:00 +0000",
        "TextBody": "Où est ma commande ?",
        "HtmlBody": "<p>Où est ma commande ?</p>",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [
            {"Name": "X-Spam-Status", "Value": "No"},
            {"Name": "Message-ID", "Value": "<pm1@example.org>"},
            {"Name": "MIME-Version", "Value": "1.0"}
        ],
        "Attachments": [{
            "Name": "facture.txt",
            "Content": base64::engine::general_purpose::STANDARD.encode("total: 42"),
            "ContentType": "text/plain",
            "ContentLength": 9,
            "ContentID": ""
        }]
    });
    if let Some(raw) = raw_email {
        payload["RawEmail"] = json!(raw);
    }
    payload
}

#[tokio::test]
async fn postmark_json_is_rebuilt_faithfully_and_wrong_credentials_get_401() {
    let s = setup().await;
    let body = serde_json::to_vec(&postmark_payload(None)).unwrap();
    let (status, _) = s
        .post(
            "/hooks/inbound-mail/postmark",
            "application/json",
            body.clone(),
            &[("authorization", basic("postmark:x"))],
        )
        .await;
    assert_eq!(status, 401);
    s.nothing_published().await;

    let auth = [("authorization", basic(POSTMARK_AUTH))];
    let (status, answer) = s.post("/hooks/inbound-mail/postmark", "application/json", body, &auth).await;
    assert_eq!(status, 200, "{answer}");
    let (subject, body, metadata) = s.stored().await;
    assert_eq!(subject.as_deref(), Some("Commande n° 7"));
    assert_eq!(body.trim(), "Où est ma commande ?");
    assert_eq!(metadata["messageId"], "pm1@example.org", "{metadata}");
    assert_eq!(metadata["from"]["name"], "Ada Customer", "{metadata}");
    let attachments: Value = sqlx::query_scalar("SELECT to_jsonb(attachments) FROM messages")
        .fetch_one(&s.db.pool)
        .await
        .unwrap_or(Value::Null);
    assert!(attachments.to_string().contains("facture.txt"), "{attachments}");
    s.finish().await;
}

#[tokio::test]
async fn postmark_raw_email_is_published_as_received() {
    let s = setup().await;
    let raw = raw_mail("pm-raw");
    let body = serde_json::to_vec(&postmark_payload(Some(&raw))).unwrap();
    let auth = [("authorization", basic(POSTMARK_AUTH))];
    let (status, answer) = s.post("/hooks/inbound-mail/postmark", "application/json", body, &auth).await;
    assert_eq!(status, 200, "{answer}");
    let (subject, _, metadata) = s.stored().await;
    assert_eq!((subject.as_deref(), &metadata["messageId"]), (Some("Order 7"), &json!("pm-raw@example.org")));
    s.finish().await;
}

/// Mandrill inbound: a form with `mandrill_events`, signed with `X-Mandrill-Signature`
/// (docs: "Inbound Webhook Format", "How to Authenticate Webhook Requests").
#[tokio::test]
async fn mandrill_signed_events_are_stored_and_a_bad_signature_gets_401() {
    let s = setup().await;
    let events = json!([{
        "event": "inbound",
        "ts": 1733133600,
        "_id": "mandrill-inbound-1",
        "msg": {
            "raw_msg": raw_mail("md1"),
            "headers": {"Subject": "Order 7"},
            "text": "Where is my order?\n",
            "from_email": "ada@example.org",
            "from_name": "Ada Customer",
            "to": [["support@example.com", null]],
            "email": "support@example.com",
            "subject": "Order 7",
            "spam_report": {"score": 0, "matched_rules": []},
            "dkim": {"signed": false, "valid": false},
            "spf": {"result": "pass", "detail": ""}
        }
    }])
    .to_string();
    let body = serde_urlencoded::to_string([("mandrill_events", &events)]).unwrap().into_bytes();
    let sign = |key: &str| {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{PUBLIC_URL}/hooks/inbound-mail/mandrill").as_bytes());
        mac.update(b"mandrill_events");
        mac.update(events.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let form = "application/x-www-form-urlencoded";

    let (status, answer) =
        s.post("/hooks/inbound-mail/mandrill", form, body.clone(), &[("x-mandrill-signature", sign("wrong"))]).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = s.post("/hooks/inbound-mail/mandrill", form, body.clone(), &[]).await;
    assert_eq!(status, 401);
    s.nothing_published().await;

    let signed = [("x-mandrill-signature", sign(MANDRILL_KEY))];
    let (status, answer) = s.post("/hooks/inbound-mail/mandrill", form, body, &signed).await;
    assert_eq!((status, answer["published"].as_i64()), (200, Some(1)), "{answer}");
    let (subject, _, _) = s.stored().await;
    assert_eq!(subject.as_deref(), Some("Order 7"));
    s.finish().await;
}

#[tokio::test]
async fn unknown_mailboxes_and_unconfigured_providers_publish_nothing() {
    let s = setup().await;
    let mut payload = postmark_payload(None);
    payload["OriginalRecipient"] = json!("nobody@example.com");
    let auth = [("authorization", basic(POSTMARK_AUTH))];
    let (status, answer) =
        s.post("/hooks/inbound-mail/postmark", "application/json", serde_json::to_vec(&payload).unwrap(), &auth).await;
    // 403: the answer after which Postmark stops retrying.
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("unknown_entry_point")), "{answer}");
    let (status, _) = s.post("/hooks/inbound-mail/sparkpost", "application/json", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 404);
    s.nothing_published().await;
    s.finish().await;
}
