//! Regression tests for what real traffic did to intake (issue 9), each through the real
//! worker against the local RabbitMQ and PostgreSQL: poison messages of every class between
//! good ones, several updates in one delivery, reused Message-IDs, future timestamps, two
//! tenants on one external id, deletes and the preview, a caller's userId, storage keys from
//! input and attempt headers.

mod common;

use std::path::PathBuf;

use common::*;
use intake::adapters::{AdapterRegistry, ChannelType, Direction};
use intake::amqp::envelope;
use intake::amqp::publish::new_message_properties;
use intake::store;
use intake::update::{self, AttributeChanges, MessageExtras, Target, UpdateRequest};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

async fn start(db: &TestDb, broker: &TestBroker) -> RunningWorker {
    start_worker_with(&db.url, broker, AdapterRegistry::with_defaults(), |_| {}).await
}

fn webhook(id: &str, body: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "conversationKey": "order-1", "direction": "inbound",
        "sender": {"id": "cust-1"}, "body": body, "occurredAt": "2026-11-01T10:00:00Z"}))
    .unwrap()
}

/// Publish with arbitrary headers (project, attempt).
async fn publish_with(broker: &TestBroker, routing_key: &str, headers: Vec<(&'static str, String)>, body: &[u8]) {
    let props = new_message_properties(&Uuid::new_v4().to_string(), "application/json", headers);
    broker.publisher.publish(&broker.topology.exchange, routing_key, body, props).await.unwrap();
}

async fn texts(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_of_every_class_is_dead_lettered_and_never_holds_the_queue() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    // A rejection only the database knows about (SQLSTATE 54000, like an index key over
    // PostgreSQL's limit), for a message the validation lets through.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.body = 'poison-db' THEN
           RAISE EXCEPTION 'refused by the test' USING ERRCODE = '54000'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let big = "x".repeat(6000);
    let poison: Vec<(&str, Vec<u8>)> = vec![
        (
            "field_too_long",
            serde_json::to_vec(&json!({"id": "p1", "direction": "inbound", "body": "b", "sender": {"id": big}}))
                .unwrap(),
        ),
        (
            "field_too_long",
            serde_json::to_vec(&json!({"id": "p2", "direction": "inbound", "body": "b", "conversationKey": big}))
                .unwrap(),
        ),
        ("field_too_long", serde_json::to_vec(&json!({"id": big, "direction": "inbound", "body": "b"})).unwrap()),
        ("malformed_payload", br#"{"id": "p3", "direction": "sideways", "body": "b"}"#.to_vec()),
        (
            "malformed_payload",
            br#"{"id": "p4", "direction": "inbound", "body": "b", "metadata": {"n": 1e999}}"#.to_vec(),
        ),
        ("database_rejected", webhook("p5", "poison-db")),
    ];
    let mut batch = Vec::new();
    for (i, (_, body)) in poison.iter().enumerate() {
        batch.push(("webhook.webhook".to_owned(), Some("shop".to_owned()), webhook(&format!("good-{i}"), "fine")));
        batch.push(("webhook.webhook".to_owned(), Some("shop".to_owned()), body.clone()));
    }
    // A NUL in the text is no poison: PostgreSQL cannot store it, U+FFFD takes its place.
    batch.push(("webhook.webhook".to_owned(), Some("shop".to_owned()), webhook("good-nul", "a\u{0}b")));
    let w = start(&db, &broker).await;
    broker.publish_many(batch).await; // all in one batch: the fallback must isolate the poison

    wait_until(20, "every good message stored", || async {
        count(&db.pool, "SELECT count(*) FROM messages WHERE idempotency_key LIKE 'webhook:shop:good-%'").await == 7
    })
    .await;
    wait_until(20, "every poison dead-lettered", || async { broker.dead_letters().await.len() == poison.len() }).await;
    let mut reasons: Vec<String> = broker.dead_letters().await.into_iter().map(|d| d.reason).collect();
    reasons.sort();
    let mut expected: Vec<String> = poison.iter().map(|(r, _)| r.to_string()).collect();
    expected.sort();
    assert_eq!(reasons, expected);
    let letters = broker.dead_letters().await;
    let db_rejected = letters.iter().find(|d| d.reason == "database_rejected").unwrap();
    assert!(db_rejected.error.contains("SQLSTATE 54000"), "{}", db_rejected.error);
    let too_long = letters.iter().find(|d| d.reason == "field_too_long").unwrap();
    assert!(too_long.error.contains("over the 1000-byte limit"), "{}", too_long.error);
    assert!(letters.iter().all(|d| d.attempts == 1), "nothing went through the retry path");
    let nul: String = sqlx::query_scalar("SELECT body FROM messages WHERE idempotency_key = 'webhook:shop:good-nul'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(nul, "a\u{FFFD}b");
    // And the queue moves on: a message after all that is applied at once.
    broker.publish("webhook.webhook", Some("shop"), &webhook("after", "fine")).await;
    wait_until(10, "a later message", || async {
        count(&db.pool, "SELECT count(*) FROM messages WHERE idempotency_key = 'webhook:shop:after'").await == 1
    })
    .await;
    for queue in broker.topology.all_queues() {
        if queue != broker.topology.dead_queue {
            assert_eq!(broker.depth(&queue).await, 0, "{queue} is empty");
        }
    }
    w.stop().await;
    broker.cleanup().await;
}

fn whatsapp(messages: Value, statuses: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PN1"},
                  "contacts": [{"profile": {"name": "Ada"}, "wa_id": "4915112345678"}],
                  "messages": messages, "statuses": statuses}}]}]}))
    .unwrap()
}

/// The customer's text and a status for a message intake has not stored, in one webhook.
fn text_and_status() -> Vec<u8> {
    whatsapp(
        json!([{"from": "4915112345678", "id": "wamid.IN1", "timestamp": "1764000000", "type": "text",
                "text": {"body": "Where is my order?"}}]),
        json!([{"id": "wamid.OUT1", "status": "delivered", "timestamp": "1764000100", "recipient_id": "4915112345678"}]),
    )
}

/// The outbound message the status is about, as an agent integration stores it.
async fn store_outbound(pool: &PgPool, conversation_id: Uuid) {
    let mut message = msg("wa:wamid.OUT1", Direction::Outbound, "2025-11-24T16:00:00Z", "It ships today");
    message.sender.id = Some("agent-1".into());
    update::apply(pool, &to_conversation("p", conversation_id, message)).await.unwrap();
}

async fn delivery_status(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT metadata->>'deliveryStatus' FROM messages WHERE idempotency_key = 'wa:wamid.OUT1'")
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_item_of_a_webhook_array_holds_back_none_of_its_siblings() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start(&db, &broker).await;
    let item = |id: &str, at: &str| json!({"id": id, "conversationKey": "order-9", "direction": "inbound", "body": id, "occurredAt": at});
    let batch = serde_json::to_vec(&json!([
        item("a1", "2026-11-01T10:00:00Z"),
        item("a2", "yesterday"),
        item("a3", "2026-11-01T10:02:00Z")
    ]))
    .unwrap();
    broker.publish("webhook.webhook", Some("shop"), &batch).await;
    wait_until(10, "a dead letter", || async { broker.depth(&broker.topology.dead_queue).await == 1 }).await;
    let keys = texts(&db.pool, "SELECT idempotency_key FROM messages ORDER BY occurred_at").await;
    assert_eq!(keys, ["webhook:shop:a1", "webhook:shop:a3"]);
    let letters = broker.dead_letters().await;
    assert_eq!(letters[0].reason, "malformed_payload");
    assert!(letters[0].error.contains("[1]: occurredAt `yesterday`"), "{}", letters[0].error);
    assert!(letters[0].error.contains("1 of the delivery's 3 items failed"), "{}", letters[0].error);
    assert_eq!(letters[0].body, batch);
    // An item that fails when applied (a key over the limit) and one whose entry point is
    // unknown: the good one applies, and the dead letter names both failures.
    let on = |id: &str, at: &str, channel: &str| {
        let mut item = item(id, at);
        item["externalChannelId"] = json!(channel);
        item
    };
    let batch = serde_json::to_vec(&json!([
        on("b1", "2026-11-01T10:03:00Z", "shop"),
        on(&"k".repeat(1200), "2026-11-01T10:04:00Z", "shop"),
        on("b3", "2026-11-01T10:05:00Z", "nowhere")
    ]))
    .unwrap();
    broker.publish("webhook.webhook", None, &batch).await;
    wait_until(10, "a second dead letter", || async { broker.depth(&broker.topology.dead_queue).await == 2 }).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages WHERE body = 'b1'").await, 1);
    let letters = broker.dead_letters().await;
    let both = letters.iter().find(|d| d.body == batch).unwrap();
    assert_eq!(both.reason, "field_too_long");
    assert!(
        both.error.ends_with(
            "; and unknown_entry_point: `b3`: no webhook entry point for `nowhere`; 1 of the delivery's 3 items failed"
        ),
        "{}",
        both.error
    );
    w.stop().await;
    broker.cleanup().await;
}

/// One WhatsApp webhook for two business numbers (Meta batches entries): a text for each.
fn two_numbers() -> Vec<u8> {
    let entry = |number: &str, id: &str| {
        json!({"id": "WABA", "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": number},
            "messages": [{"from": "4915112345678", "id": id, "timestamp": "1764000000", "type": "text",
                          "text": {"body": "Hello"}}]}}]})
    };
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [entry("PN1", "wamid.KNOWN"), entry("PN2", "wamid.UNKNOWN")]}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_for_an_unknown_entry_point_holds_back_none_of_its_siblings() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Chat, "whatsapp", "PN1").await;
    let w = start(&db, &broker).await;
    broker.publish("chat.whatsapp", None, &two_numbers()).await;
    wait_until(10, "a dead letter", || async { broker.depth(&broker.topology.dead_queue).await == 1 }).await;
    // The known number's text is stored; the delivery is dead-lettered for the other one.
    assert_eq!(texts(&db.pool, "SELECT idempotency_key FROM messages").await, ["wa:wamid.KNOWN"]);
    let letters = broker.dead_letters().await;
    assert_eq!(letters[0].reason, "unknown_entry_point");
    assert!(letters[0].error.starts_with("`wa:wamid.UNKNOWN`: no chat entry point"), "{}", letters[0].error);
    assert!(letters[0].error.contains("`PN2`"), "{}", letters[0].error);
    assert!(
        letters[0].error.contains("; 1 of the delivery's 2 items failed; the other 1 were applied"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[0].body, two_numbers(), "the whole delivery is kept for replay");
    // Once the number is registered, a replay stores the other text and the first only once.
    db.project_with_entry_point("p", ChannelType::Chat, "whatsapp", "PN2").await;
    assert_eq!(broker.replay_dead(&intake::amqp::dlq::Selection::All).await, 1);
    wait_until(10, "the other text", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 2 }).await;
    wait_until(10, "queue drained", || async { broker.depth(&broker.topology.queue(ChannelType::Chat)).await == 0 })
        .await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages").await, 2);
    assert_eq!(broker.depth(&broker.topology.dead_queue).await, 0);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_for_an_unknown_message_is_parked_and_its_sibling_text_stored() {
    // Status first: the text is stored on the first delivery, the status parked, then applied
    // when its message arrives.
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Chat, "whatsapp", "PN1").await;
    let w = start(&db, &broker).await;
    broker.publish("chat.whatsapp", None, &text_and_status()).await;
    wait_until(10, "text stored, status parked", || async {
        count(&db.pool, "SELECT count(*) FROM messages WHERE idempotency_key = 'wa:wamid.IN1'").await == 1
            && count(&db.pool, "SELECT count(*) FROM parked_updates").await == 1
    })
    .await;
    assert!(broker.dead_letters().await.is_empty());
    let conversation_id: Uuid =
        sqlx::query_scalar("SELECT conversation_id FROM messages LIMIT 1").fetch_one(&db.pool).await.unwrap();
    store_outbound(&db.pool, conversation_id).await;
    assert_eq!(delivery_status(&db.pool).await.as_deref(), Some("delivered"));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM parked_updates").await, 0);
    // A redelivery of the webhook changes nothing.
    broker.publish("chat.whatsapp", None, &text_and_status()).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages").await, 2);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM parked_updates").await, 0);
    w.stop().await;
    broker.cleanup().await;

    // Message first: the status applies at once, nothing is parked.
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Chat, "whatsapp", "PN1").await;
    let w = start(&db, &broker).await;
    broker
        .publish(
            "chat.whatsapp",
            None,
            &whatsapp(
                json!([{"from": "4915112345678", "id": "wamid.IN0", "timestamp": "1763990000", "type": "text",
                        "text": {"body": "Hello"}}]),
                json!([]),
            ),
        )
        .await;
    wait_until(10, "first text", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 1 }).await;
    let conversation_id: Uuid =
        sqlx::query_scalar("SELECT conversation_id FROM messages LIMIT 1").fetch_one(&db.pool).await.unwrap();
    store_outbound(&db.pool, conversation_id).await;
    broker.publish("chat.whatsapp", None, &text_and_status()).await;
    wait_until(10, "status applied", || async { delivery_status(&db.pool).await.as_deref() == Some("delivered") })
        .await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM parked_updates").await, 0);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages").await, 3);
    w.stop().await;
    broker.cleanup().await;
}

fn corpus_mail(name: &str) -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/email/zammad").join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            eprintln!("SKIPPED: {} is absent (the shared corpus is not beside this checkout)", path.display());
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_different_mails_with_one_message_id_are_three_messages() {
    let names = ["mail050.box", "mail060.box", "mail077.box"];
    let Some(mails) = names.iter().map(|n| corpus_mail(n)).collect::<Option<Vec<_>>>() else { return };
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Email, "email", "support@corpus.test").await;
    let w = start(&db, &broker).await;
    for mail in &mails {
        broker.publish("email.email", Some("support@corpus.test"), mail).await;
    }
    wait_until(20, "three messages", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 3 }).await;
    let keys = texts(&db.pool, "SELECT idempotency_key FROM messages ORDER BY idempotency_key").await;
    let original = &keys[0];
    assert!(keys[1..].iter().all(|k| k.starts_with(&format!("{original}#"))), "{keys:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM messages WHERE metadata->>'idempotencyKeyReused' = 'true'").await,
        2
    );
    // One of them again (a redelivery, or the MTA sending it twice): nothing new.
    broker.publish("email.email", Some("support@corpus.test"), &mails[1]).await;
    broker.publish("email.email", Some("support@corpus.test"), &mails[0]).await;
    broker.publish("email.email", Some("support@corpus.test"), &webhook_free_marker()).await;
    wait_until(20, "the marker after the copies", || async {
        count(&db.pool, "SELECT count(*) FROM messages").await == 4
    })
    .await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages WHERE subject = 'marker'").await, 1);
    w.stop().await;
    broker.cleanup().await;
}

/// A mail published after the copies: once it is stored, the copies before it were handled.
fn webhook_free_marker() -> Vec<u8> {
    b"From: a@example.com\r\nTo: support@corpus.test\r\nSubject: marker\r\nMessage-ID: <marker@example.com>\r\n\r\nmarker\r\n"
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_time_is_clamped_and_kept_in_metadata() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start(&db, &broker).await;
    let future = serde_json::to_vec(&json!({"id": "f1", "conversationKey": "k", "direction": "inbound",
        "body": "from the future", "occurredAt": "2099-01-01T00:00:00Z"}))
    .unwrap();
    broker.publish("webhook.webhook", Some("shop"), &future).await;
    wait_until(10, "stored", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 1 }).await;
    let (occurred, original): (chrono::DateTime<chrono::Utc>, Option<String>) =
        sqlx::query_as("SELECT occurred_at, metadata->>'originalOccurredAt' FROM messages")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(occurred <= chrono::Utc::now(), "clamped to the receive time: {occurred}");
    assert_eq!(original.as_deref(), Some("2099-01-01T00:00:00+00:00"));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM conversations WHERE last_message_at > now() OR last_activity_at > now()")
            .await,
        0
    );
    // A normal, later message still moves the conversation on.
    let later = serde_json::to_vec(&json!({"id": "f2", "conversationKey": "k", "direction": "inbound",
        "body": "now", "occurredAt": chrono::Utc::now().to_rfc3339()}))
    .unwrap();
    broker.publish("webhook.webhook", Some("shop"), &later).await;
    wait_until(10, "preview follows the later message", || async {
        count(&db.pool, "SELECT count(*) FROM conversations WHERE preview = 'now'").await == 1
    })
    .await;
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_registering_the_same_mailbox_cannot_take_or_break_its_traffic() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    for project in ["a", "b"] {
        store::ensure_project(&db.pool, project).await.unwrap();
    }
    let first = store::create_entry_point(&db.pool, "a", ChannelType::Email, "email", "Support@Shop.test", json!({}))
        .await
        .unwrap();
    let second = store::create_entry_point(&db.pool, "b", ChannelType::Email, "email", "support@shop.test", json!({}))
        .await
        .unwrap();
    assert_eq!(first.receives_unscoped_traffic, Some(true));
    assert_eq!(second.receives_unscoped_traffic, Some(false), "the second registration is told so");
    let w = start(&db, &broker).await;
    let mail = |id: &str| {
        format!("From: c@example.com\r\nTo: support@shop.test\r\nSubject: {id}\r\nMessage-ID: <{id}@example.com>\r\n\r\nhi\r\n")
            .into_bytes()
    };
    // An MTA knows no project: project a's mailbox gets it, nothing is dead-lettered.
    broker.publish("email.email", None, &mail("unscoped")).await;
    // A publisher (or the gateway) that names project b reaches b.
    publish_with(&broker, "email.email", vec![(envelope::PROJECT, "b".into())], &mail("scoped")).await;
    wait_until(10, "both stored", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 2 }).await;
    assert_eq!(texts(&db.pool, "SELECT project_id FROM messages WHERE subject = 'unscoped'").await, ["a"]);
    assert_eq!(texts(&db.pool, "SELECT project_id FROM messages WHERE subject = 'scoped'").await, ["b"]);
    assert!(broker.dead_letters().await.is_empty());
    w.stop().await;
    broker.cleanup().await;
}

fn slack(event: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"token": "t", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
        "event_id": format!("Ev{}", Uuid::new_v4().simple()), "event_time": 1764000000, "event": event}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_leaves_the_preview() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Chat, "slack", "C1").await;
    let w = start(&db, &broker).await;
    let say = |ts: &str, text: &str| {
        slack(
            json!({"type": "message", "channel": "C1", "user": "U1", "text": text, "ts": ts, "thread_ts": "1764000000.000100"}),
        )
    };
    broker.publish("chat.slack", None, &say("1764000000.000100", "Hi, I cannot log in")).await;
    broker.publish("chat.slack", None, &say("1764000010.000200", "my password is hunter2, oops")).await;
    wait_until(10, "two messages", || async {
        count(&db.pool, "SELECT count(*) FROM conversations WHERE preview LIKE '%hunter2%'").await == 1
    })
    .await;
    let delete = slack(json!({"type": "message", "subtype": "message_deleted", "channel": "C1", "hidden": true,
        "ts": "1764000020.000300", "deleted_ts": "1764000010.000200",
        "previous_message": {"type": "message", "user": "U1", "text": "my password is hunter2, oops",
                             "ts": "1764000010.000200", "thread_ts": "1764000000.000100"}}));
    broker.publish("chat.slack", None, &delete).await;
    wait_until(10, "preview without the deleted text", || async {
        count(&db.pool, "SELECT count(*) FROM conversations WHERE preview = 'Hi, I cannot log in'").await == 1
    })
    .await;
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages WHERE body LIKE '%hunter2%'").await, 0);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_set_user_id_survives_the_next_inbound_message() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start(&db, &broker).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("m1", "first")).await;
    wait_until(10, "first", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 1 }).await;
    let conversation_id: Uuid = sqlx::query_scalar("SELECT id FROM conversations").fetch_one(&db.pool).await.unwrap();
    let set_user = UpdateRequest {
        project_id: "p".into(),
        target: Target::Conversation(conversation_id),
        action: None,
        extras: MessageExtras::default(),
        attributes: AttributeChanges { user_id: Some(Some("crm-42".into())), ..Default::default() },
    };
    update::apply(&db.pool, &set_user).await.unwrap();
    let mut next = serde_json::from_slice::<Value>(&webhook("m2", "second")).unwrap();
    next["occurredAt"] = json!("2026-11-02T10:00:00Z");
    broker.publish("webhook.webhook", Some("shop"), &serde_json::to_vec(&next).unwrap()).await;
    wait_until(10, "second", || async { count(&db.pool, "SELECT count(*) FROM messages").await == 2 }).await;
    assert_eq!(texts(&db.pool, "SELECT user_id FROM conversations").await, ["crm-42"]);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_keys_and_attempt_headers_from_outside_are_not_trusted() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    let w = start(&db, &broker).await;
    let with_attachment = serde_json::to_vec(&json!({"id": "a1", "direction": "inbound", "body": "see attached",
        "attachments": [{"filename": "a.txt", "size": 3, "storageKey": "../../etc/shadow"}]}))
    .unwrap();
    broker.publish("webhook.webhook", Some("shop"), &with_attachment).await;
    // attempt 0 (once an underflow) and a number beyond u32, on a message and on a bad payload
    let shop = |attempt: &str| {
        vec![(envelope::EXTERNAL_CHANNEL_ID, "shop".to_owned()), (envelope::ATTEMPT, attempt.to_owned())]
    };
    publish_with(&broker, "webhook.webhook", shop("0"), &webhook("a2", "zero")).await;
    publish_with(&broker, "webhook.webhook", shop("99999999999999999999"), &webhook("a3", "huge")).await;
    publish_with(&broker, "webhook.webhook", shop("0"), b"{not json").await;
    wait_until(10, "three stored, one dead", || async {
        count(&db.pool, "SELECT count(*) FROM messages").await == 3 && broker.dead_letters().await.len() == 1
    })
    .await;
    let attachments: Value =
        sqlx::query_scalar("SELECT attachments FROM messages WHERE idempotency_key = 'webhook:shop:a1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attachments[0]["filename"], "a.txt");
    assert!(attachments[0].get("storageKey").is_none(), "{attachments}");
    assert_eq!(broker.dead_letters().await[0].attempts, 1);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_times_out_its_statement_is_dead_lettered_after_a_few_tries() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    // One message whose insert outlasts the statement timeout: 57014 may be the environment's
    // (a slow disk) or the message's; retried a few times, then the message's.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION slow_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.body = 'slow' THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow_poison();
         ALTER DATABASE \"{}\" SET statement_timeout = '500ms';",
        db.name
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let w = start(&db, &broker).await;
    let shop = || Some("shop".to_owned());
    broker
        .publish_many(vec![
            ("webhook.webhook".to_owned(), shop(), webhook("good-a", "fine")),
            ("webhook.webhook".to_owned(), shop(), webhook("slow-1", "slow")),
            ("webhook.webhook".to_owned(), shop(), webhook("good-b", "fine")),
        ])
        .await;
    wait_until(30, "the good messages stored and the slow one dead-lettered", || async {
        count(&db.pool, "SELECT count(*) FROM messages WHERE body = 'fine'").await == 2
            && broker.dead_letters().await.len() == 1
    })
    .await;
    let dead = broker.dead_letters().await.remove(0);
    assert_eq!(dead.reason, "database_rejected");
    assert!(dead.error.contains("SQLSTATE 57014"), "{}", dead.error);
    w.stop().await;
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_delays_but_dead_letters_nothing() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", "shop").await;
    // As after a failover to a standby: every write answers SQLSTATE 25006.
    let set_read_only = |on: bool| format!("ALTER DATABASE \"{}\" SET default_transaction_read_only = {on}", db.name);
    sqlx::raw_sql(&set_read_only(true)).execute(&db.pool).await.unwrap();
    let w = start(&db, &broker).await;
    broker.publish("webhook.webhook", Some("shop"), &webhook("ro-1", "fine")).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(broker.dead_letters().await.is_empty(), "a read-only database is not the message's fault");
    assert_eq!(count(&db.pool, "SELECT count(*) FROM messages").await, 0);
    // Writable again; the worker's connections are replaced as after a real failover. Said
    // from another database: a connection to this one opened meanwhile is read-only itself.
    let admin = PgPool::connect(&format!("{ADMIN_URL}/postgres")).await.unwrap();
    sqlx::raw_sql(&set_read_only(false)).execute(&admin).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&db.name)
    .execute(&admin)
    .await
    .unwrap();
    wait_until(30, "stored once writable", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages").fetch_one(&db.pool).await.ok() == Some(1)
    })
    .await;
    assert!(broker.dead_letters().await.is_empty());
    w.stop().await;
    broker.cleanup().await;
}
