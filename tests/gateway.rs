//! The webhook gateway end to end: a signed HTTP request goes through the gateway into RabbitMQ
//! and the worker into a conversation; a request that does not verify is refused and nothing is
//! published. Real PostgreSQL, RabbitMQ and HTTP on loopback.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use intake::adapters::signature::sign_standard_webhooks;
use intake::adapters::{AdapterRegistry, ChannelType};
use intake::store;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Setup {
    db: TestDb,
    broker: TestBroker,
    url: String,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let url = spawn_gateway(db.pool.clone(), &broker.topology, 64 * 1024).await;
    Setup { db, broker, url, http: reqwest::Client::new() }
}

impl Setup {
    async fn entry_point(&self, project: &str, channel: ChannelType, adapter: &str, external: &str, secrets: &[&str]) {
        store::ensure_project(&self.db.pool, project).await.unwrap();
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        store::create_entry_point_with_secrets(
            &self.db.pool,
            project,
            channel,
            adapter,
            external,
            json!({}),
            &secrets,
            Some("meta-verify-token"),
        )
        .await
        .unwrap();
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (StatusCode, String) {
        let mut req = self.http.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn queued(&self, channel: ChannelType) -> u32 {
        self.broker.depth(&self.broker.topology.queue(channel)).await
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn standard_headers(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sign_standard_webhooks(secret, id, ts, body).unwrap()),
    ]
}

fn slack_headers(secret: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    vec![
        ("content-type", "application/json".into()),
        ("x-slack-request-timestamp", ts.to_string()),
        ("x-slack-signature", format!("v0={}", hex::encode(mac.finalize().into_bytes()))),
    ]
}

fn webhook_body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "conversationKey": "order-42", "direction": "inbound",
        "body": "My order has not arrived", "sender": {"id": "cust-42", "displayName": "Grace"},
        "occurredAt": "2026-11-20T10:00:00Z"}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_standard_webhook_becomes_a_conversation() {
    let s = setup().await;
    s.entry_point("acme", ChannelType::Webhook, "webhook", "shop", &[WHSEC]).await;
    let worker = start_worker_with(&s.db.url, &s.broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let body = webhook_body("evt-1001");
    let (status, answer) = s.post("/hooks/webhook/shop", &standard_headers(WHSEC, "msg_1", now(), &body), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["messageId"], "msg_1");

    wait_until(30, "the message applied", || async { count(&s.db.pool, "SELECT count(*) FROM messages").await == 1 })
        .await;
    let (conversation_id, project): (uuid::Uuid, String) =
        sqlx::query_as("SELECT conversation_id, project_id FROM messages").fetch_one(&s.db.pool).await.unwrap();
    assert_eq!(project, "acme");
    let bundle = store::load_conversation(&s.db.pool, "acme", conversation_id).await.unwrap().unwrap();
    assert_eq!(bundle.messages[0].id, "webhook:shop:evt-1001", "scoped to its entry point");
    assert_eq!(bundle.conversation.preview.as_deref(), Some("My order has not arrived"));
    assert_eq!(bundle.conversation.last_inbound_at, Some(at("2026-11-20T10:00:00Z")));
    assert_eq!(bundle.entry_points[0].external_channel_id, "shop");
    worker.stop().await;
    s.broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_do_not_verify_are_refused_and_nothing_is_published() {
    let s = setup().await;
    s.entry_point("acme", ChannelType::Webhook, "webhook", "shop", &[WHSEC]).await;
    s.entry_point("acme", ChannelType::Webhook, "webhook", "unsigned", &[]).await;
    let body = webhook_body("evt-1");
    let good = standard_headers(WHSEC, "msg_1", now(), &body);

    // wrong secret
    let other = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA==";
    let (status, answer) =
        s.post("/hooks/webhook/shop", &standard_headers(other, "msg_1", now(), &body), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer.contains("invalid_signature"), "{answer}");
    // body changed after signing
    let (status, _) = s.post("/hooks/webhook/shop", &good, webhook_body("evt-2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // replayed: signed ten minutes ago
    let old = now() - 600;
    let (status, answer) =
        s.post("/hooks/webhook/shop", &standard_headers(WHSEC, "msg_1", old, &body), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(answer.contains("away from now"), "{answer}");
    // no signature headers at all
    let (status, _) = s.post("/hooks/webhook/shop", &[], body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // an entry point without a secret accepts nothing
    let (status, answer) = s.post("/hooks/webhook/unsigned", &good, body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(answer.contains("no webhook secret"), "{answer}");
    // unknown entry point and adapter
    let (status, answer) = s.post("/hooks/webhook/nowhere", &good, body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(answer.contains("unknown_entry_point"), "{answer}");
    let (status, _) = s.post("/hooks/fax/shop", &good, body.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // over the body limit
    let huge = vec![b'x'; 65 * 1024];
    let (status, _) = s.post("/hooks/webhook/shop", &standard_headers(WHSEC, "m", now(), &huge), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.queued(ChannelType::Webhook).await, 0, "nothing was published");
    assert_eq!(s.broker.depth(&s.broker.topology.dead_queue).await, 0);

    // and the good request still goes through
    let (status, _) = s.post("/hooks/webhook/shop", &good, body).await;
    assert_eq!(status, StatusCode::OK);
    wait_until(10, "one message queued", || async { s.queued(ChannelType::Webhook).await == 1 }).await;
    s.broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_picks_the_tenant_and_request_headers_cannot() {
    let s = setup().await;
    let beta_secret = "whsec_YmV0YSBzZWNyZXQgZm9yIHRlc3Rz";
    s.entry_point("alpha", ChannelType::Webhook, "webhook", "shared-id", &[WHSEC]).await;
    s.entry_point("beta", ChannelType::Webhook, "webhook", "shared-id", &[beta_secret]).await;
    let worker = start_worker_with(&s.db.url, &s.broker, AdapterRegistry::with_defaults(), |_| {}).await;
    let body = webhook_body("evt-beta");
    let mut headers = standard_headers(beta_secret, "msg_b", now(), &body);
    // An attacker-chosen project header is not taken from the request.
    headers.push(("x-intake-project", "alpha".into()));
    let (status, answer) = s.post("/hooks/webhook/shared-id", &headers, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_until(30, "the message applied", || async { count(&s.db.pool, "SELECT count(*) FROM messages").await == 1 })
        .await;
    let project: String = sqlx::query_scalar("SELECT project_id FROM messages").fetch_one(&s.db.pool).await.unwrap();
    assert_eq!(project, "beta");
    worker.stop().await;
    s.broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_accepts_old_and_new_until_the_old_is_removed() {
    let s = setup().await;
    let new_secret = "whsec_bmV3IHNlY3JldCBhZnRlciByb3RhdGlvbg==";
    s.entry_point("acme", ChannelType::Webhook, "webhook", "shop", &[WHSEC, new_secret]).await;
    for (i, secret) in [WHSEC, new_secret].into_iter().enumerate() {
        let body = webhook_body(&format!("evt-{i}"));
        let (status, _) = s.post("/hooks/webhook/shop", &standard_headers(secret, "m", now(), &body), body).await;
        assert_eq!(status, StatusCode::OK);
    }
    sqlx::query("UPDATE entry_points SET webhook_secrets = $1")
        .bind(vec![new_secret])
        .execute(&s.db.pool)
        .await
        .unwrap();
    let body = webhook_body("evt-old");
    let (status, _) = s.post("/hooks/webhook/shop", &standard_headers(WHSEC, "m", now(), &body), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.broker.cleanup().await;
}

fn slack_event(event: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"token": "XXYYZZ", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": format!("Ev{}", uuid::Uuid::new_v4().simple()), "event_time": 1_764_000_000, "event": event}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_thread_with_an_edit_and_a_bot_reply_is_one_conversation() {
    let s = setup().await;
    s.entry_point("acme", ChannelType::Chat, "slack", "C0SUPPORT", &[SLACK_SECRET]).await;
    let worker = start_worker_with(&s.db.url, &s.broker, AdapterRegistry::with_defaults(), |_| {}).await;

    // Slack checks the Request URL first.
    let challenge = serde_json::to_vec(&json!({"token": "XXYYZZ", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"})).unwrap();
    let (status, answer) =
        s.post("/hooks/slack/C0SUPPORT", &slack_headers(SLACK_SECRET, now(), &challenge), challenge).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let events = [
        slack_event(
            json!({"type": "message", "channel": "C0SUPPORT", "user": "U0CUSTOMER", "text": "Our export is stuck",
            "ts": "1764000000.000100", "channel_type": "channel",
            "user_profile": {"display_name": "Dana", "real_name": "Dana Scully", "image_72": "https://avatars.example/d.png"}}),
        ),
        slack_event(json!({"type": "message", "subtype": "bot_message", "channel": "C0SUPPORT", "bot_id": "B0HELPER",
            "username": "Support Bot", "text": "Thanks, an agent will look at it", "ts": "1764000060.000200",
            "thread_ts": "1764000000.000100"})),
        slack_event(
            json!({"type": "message", "channel": "C0SUPPORT", "user": "U0CUSTOMER", "text": "It is the CSV export",
            "ts": "1764000120.000300", "thread_ts": "1764000000.000100"}),
        ),
        slack_event(json!({"type": "message", "subtype": "message_changed", "channel": "C0SUPPORT", "hidden": true,
            "ts": "1764000180.000400",
            "message": {"type": "message", "user": "U0CUSTOMER", "text": "Our CSV export is stuck", "ts": "1764000000.000100",
                        "edited": {"user": "U0CUSTOMER", "ts": "1764000180.000000"}},
            "previous_message": {"type": "message", "user": "U0CUSTOMER", "text": "Our export is stuck", "ts": "1764000000.000100"}})),
    ];
    for event in events {
        let (status, answer) =
            s.post("/hooks/slack/C0SUPPORT", &slack_headers(SLACK_SECRET, now(), &event), event).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        // Slack sends events one by one; keep their order for the edit.
        wait_until(30, "the event applied", || async { s.queued(ChannelType::Chat).await == 0 }).await;
    }
    wait_until(30, "three messages and the edit", || async {
        count(&s.db.pool, "SELECT count(*) FROM messages WHERE metadata ? 'editedAt'").await == 1
            && count(&s.db.pool, "SELECT count(*) FROM messages").await == 3
    })
    .await;
    assert_eq!(count(&s.db.pool, "SELECT count(*) FROM conversations").await, 1);
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM conversations").fetch_one(&s.db.pool).await.unwrap();
    let b = store::load_conversation(&s.db.pool, "acme", id).await.unwrap().unwrap();
    let directions: Vec<&str> = b.messages.iter().map(|m| m.metadata["direction"].as_str().unwrap()).collect();
    assert_eq!(directions, ["inbound", "outbound", "inbound"]);
    assert_eq!(b.messages[0].body, "Our CSV export is stuck", "the edit replaced the body");
    let c = &b.conversation;
    assert_eq!(c.last_inbound_at, Some(at("2025-11-24T16:02:00.0003Z")));
    assert_eq!(c.last_outbound_at, Some(at("2025-11-24T16:01:00.0002Z")));
    assert_eq!(c.last_message_at, c.last_inbound_at);
    assert_eq!(c.metadata.first_response_at, Some(at("2025-11-24T16:01:00.0002Z")));
    assert_eq!(c.user_display_name.as_deref(), Some("Dana"));
    assert_eq!(c.preview.as_deref(), Some("It is the CSV export"));
    worker.stop().await;
    s.broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_meta_and_telegram_signatures_are_checked() {
    let s = setup().await;
    s.entry_point("acme", ChannelType::Chat, "twilio-sms", "+15005550006", &["12345678twiliotoken"]).await;
    s.entry_point("acme", ChannelType::Chat, "whatsapp", "106540352242922", &["meta-app-secret"]).await;
    s.entry_point("acme", ChannelType::Chat, "telegram", "bot-1", &["tg_secret-token"]).await;

    // Twilio signs the public URL it called plus the sorted form fields (HMAC-SHA1, base64).
    let form = "MessageSid=SM123&From=%2B14155550100&To=%2B15005550006&Body=Hello+there&NumMedia=0";
    let path = "/hooks/twilio-sms/+15005550006";
    let mut fields: Vec<(String, String)> = serde_urlencoded::from_str(form).unwrap();
    fields.sort();
    let mut signed = format!("https://hooks.example.com{path}");
    for (k, v) in &fields {
        signed.push_str(k);
        signed.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"12345678twiliotoken").unwrap();
    mac.update(signed.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let form_type = ("content-type", "application/x-www-form-urlencoded".to_string());
    let (status, answer) =
        s.post(path, &[form_type.clone(), ("x-twilio-signature", signature.clone())], form.into()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.contains("<Response>"), "TwiML answer: {answer}");
    let tampered = form.replace("Hello", "Hullo");
    let (status, _) = s.post(path, &[form_type, ("x-twilio-signature", signature)], tampered.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Meta: X-Hub-Signature-256 is HMAC-SHA256 of the body with the app secret.
    let wa = br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"meta-app-secret").unwrap();
    mac.update(&wa);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (status, _) = s.post("/hooks/whatsapp/106540352242922", &[("x-hub-signature-256", sig)], wa.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        s.post("/hooks/whatsapp/106540352242922", &[("x-hub-signature-256", "sha256=00".into())], wa).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Meta's subscription check.
    let verify = |token: &str| {
        format!(
            "{}/hooks/whatsapp/106540352242922?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            s.url
        )
    };
    let resp = s.http.get(verify("meta-verify-token")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "1158201444");
    assert_eq!(s.http.get(verify("guess")).send().await.unwrap().status(), StatusCode::FORBIDDEN);

    // Telegram: the secret token header.
    let tg = br#"{"update_id":1}"#.to_vec();
    let (status, _) = s
        .post("/hooks/telegram/bot-1", &[("x-telegram-bot-api-secret-token", "tg_secret-token".into())], tg.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.post("/hooks/telegram/bot-1", &[("x-telegram-bot-api-secret-token", "nope".into())], tg).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    wait_until(10, "three accepted requests queued", || async { s.queued(ChannelType::Chat).await == 3 }).await;
    s.broker.cleanup().await;
}
