//! Hostile input, end to end, against the real services.
//!
//! 1. The real `intake worker` binary gets every real fixture (adapters/tests/fixtures/{email,chat})
//!    plus generated hostile inputs, each followed by a valid message on the same queue. Every
//!    delivery must end applied, dead-lettered with the expected `x-intake-reason`, or skipped
//!    (counted by `intake_messages_skipped_total`); none may vanish, the process must stay up and
//!    its peak RSS (`VmHWM`) bounded.
//! 2. The webhook gateway gets hostile HTTP requests; refused ones publish nothing.
//!
//! Known issues are marked: #1 (an error quoting a huge payload value wedges the worker) is the
//! ignored test below, #2 (any JSON object on `chat.telegram` is skipped, not dead-lettered) the
//! two cases whose expectation is today's `Skipped`.
//!
//! Run: `cargo nextest run --workspace -E 'binary(hostile)' --no-capture` (prints the tables;
//! `--run-ignored all` adds #1).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use intake::adapters::signature::sign_standard_webhooks;
use intake::adapters::{AdapterRegistry, ChannelType, Delivery, Headers, NormalizedUpdate, UpdateAction};
use intake::amqp::publish::{new_message_properties, PublishError};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use tokio::process::Child;

const SQL: &str = "'; DROP TABLE messages; --";
const MIB: usize = 1024 * 1024;

/// What must become of one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Committed: every message it appends is in `messages`, every edit/delete/status applied.
    Applied,
    /// In the dead queue with this `x-intake-reason`.
    Dead(&'static str),
    /// Acked with nothing to apply (an event the adapter ignores), counted as skipped.
    Skipped,
    /// Refused by the broker at publish time (no queue bound for the routing key).
    Unroutable,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Applied => write!(f, "applied"),
            Expect::Dead(reason) => write!(f, "dead: {reason}"),
            Expect::Skipped => write!(f, "skipped"),
            Expect::Unroutable => write!(f, "refused at publish (unroutable)"),
        }
    }
}

struct Case {
    label: String,
    routing_key: String,
    /// `x-intake-external-channel-id`.
    envelope: Option<String>,
    /// Further AMQP headers, raw (invalid UTF-8, wrong types).
    raw_headers: Vec<(&'static str, AMQPValue)>,
    content_type: String,
    body: Vec<u8>,
    /// `None`: what the adapter itself says about the bytes (used for the real fixtures).
    expect: Option<Expect>,
    /// Counted in the "valid messages around them" total.
    good: bool,
}

impl Case {
    fn new(label: impl Into<String>, routing_key: &str, body: Vec<u8>, expect: Option<Expect>) -> Self {
        let channel = routing_key.split('.').next().unwrap_or_default();
        let content_type = match channel {
            "email" => "message/rfc822",
            _ if routing_key.ends_with("twilio-sms") => "application/x-www-form-urlencoded",
            _ => "application/json",
        };
        Case {
            label: label.into(),
            routing_key: routing_key.into(),
            envelope: None,
            raw_headers: vec![],
            content_type: content_type.into(),
            body,
            expect,
            good: false,
        }
    }
    fn envelope(mut self, id: &str) -> Self {
        self.envelope = Some(id.into());
        self
    }
    fn content_type(mut self, ct: &str) -> Self {
        self.content_type = ct.into();
        self
    }
    fn header(mut self, name: &'static str, value: AMQPValue) -> Self {
        self.raw_headers.push((name, value));
        self
    }
    fn channel(&self) -> Option<ChannelType> {
        self.routing_key.split('.').next()?.parse().ok()
    }
}

// ---------------------------------------------------------------------------------------------
// inputs
// ---------------------------------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("adapters/tests/fixtures")
}

/// Every real fixture, as (label, routing key, body). The pywa corpora are maps of webhooks:
/// each entry is one delivery, as Meta sends them.
fn real_fixtures() -> Vec<(String, String, Vec<u8>)> {
    let mut out = vec![];
    for dir in ["email", "chat"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("eml" | "json" | "form")))
            .collect();
        files.sort();
        for path in files {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let body = std::fs::read(&path).unwrap();
            let adapter = match dir {
                "email" => "email",
                _ => match name.split('_').next().unwrap() {
                    "twilio" => "twilio-sms",
                    other => other,
                },
            };
            let routing_key = format!("{dir}.{adapter}");
            if name.starts_with("whatsapp_pywa_") {
                let corpus: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body).unwrap();
                for (entry, webhook) in corpus {
                    out.push((
                        format!("{dir}/{name}#{entry}"),
                        routing_key.clone(),
                        serde_json::to_vec(&webhook).unwrap(),
                    ));
                }
            } else {
                out.push((format!("{dir}/{name}"), routing_key, body));
            }
        }
    }
    out
}

fn fixture(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(dir).join(name)).unwrap()
}

const HOSTILE_MAILBOX: &str = "support@hostile.test";
const HOSTILE_SLACK: &str = "CHOSTILE1";
const HOSTILE_SHOP: &str = "shop";
/// A webhook entry point whose external id itself looks like SQL.
const SQL_SHOP: &str = "'; DROP TABLE entry_points; --";

fn email(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = headers.replace('\n', "\r\n").into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn simple_email(id: &str, subject: &str, body: &str) -> Vec<u8> {
    email(
        &format!(
            "From: Ada Customer <ada@customer.test>\nTo: {HOSTILE_MAILBOX}\nSubject: {subject}\n\
             Date: Tue, 25 Nov 2025 10:00:00 +0000\nMessage-ID: <{id}>\nContent-Type: text/plain; charset=utf-8\n"
        ),
        body.as_bytes(),
    )
}

fn slack(ts: &str, channel: &str, user: &str, name: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"token": "t", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
        "event_id": format!("Ev{ts}"), "event_time": 1_764_000_000,
        "event": {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
                  "channel_type": "channel", "user_profile": {"display_name": name, "real_name": name}}}))
    .unwrap()
}

fn webhook(id: &str, body: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "conversationKey": "hostile", "direction": "inbound", "body": body,
        "sender": {"id": "cust-1", "displayName": "Lin"}, "occurredAt": "2025-01-01T00:00:00Z"}))
    .unwrap()
}

/// A valid message on the same queue as `after`, so a bad delivery shares batches with good ones.
fn good_after(after: &Case, n: usize) -> Option<Case> {
    let mut case = match after.channel()? {
        ChannelType::Email => Case::new(
            format!("  valid email #{n}"),
            "email.email",
            simple_email(&format!("good-{n}@customer.test"), &format!("good {n}"), &format!("hello {n}\n")),
            Some(Expect::Applied),
        ),
        ChannelType::Chat => Case::new(
            format!("  valid slack #{n}"),
            "chat.slack",
            slack(&format!("1764000{n:03}.000100"), HOSTILE_SLACK, "U0GOOD", "Good", &format!("good {n}")),
            Some(Expect::Applied),
        ),
        ChannelType::Webhook => Case::new(
            format!("  valid webhook #{n}"),
            "webhook.webhook",
            webhook(&format!("good-{n}"), &format!("good {n}")),
            Some(Expect::Applied),
        )
        .envelope(HOSTILE_SHOP),
    };
    case.good = true;
    Some(case)
}

/// A multipart nested `depth` levels deep, with a text part at the bottom.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut out = String::from(
        "From: Deep <deep@customer.test>\r\nTo: support@hostile.test\r\nSubject: nested\r\n\
         Message-ID: <nested@hostile.test>\r\nMIME-Version: 1.0\r\n",
    );
    for i in 0..depth {
        out.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
    }
    out.push_str("Content-Type: text/plain\r\n\r\nat the bottom\r\n");
    for i in (0..depth).rev() {
        out.push_str(&format!("--b{i}--\r\n"));
    }
    out.into_bytes()
}

fn hostile_cases() -> Vec<Case> {
    use Expect::*;
    let mut cases = vec![];
    let mail = |label: &str, body: Vec<u8>, expect: Expect| {
        Case::new(format!("email: {label}"), "email.email", body, Some(expect)).envelope(HOSTILE_MAILBOX)
    };

    // --- email: truncated MIME (real fixtures cut at several offsets)
    for name in ["tb_sample02_latin1_qp_attachments.eml", "tb_sample08_html_related_inline_image.eml"] {
        let full = fixture("email", name);
        let n = full.len();
        for cut in [0, 1, 7, 12, 64, n / 4, n / 2, 3 * n / 4, n - 1] {
            // Decoded as far as it goes once a standard header field name and its colon are there
            // (`From: "` is enough); before that it is not an email.
            let expect = if full[..cut].contains(&b':') { Applied } else { Dead("malformed_payload") };
            cases.push(mail(&format!("{name} cut at byte {cut}/{n}"), full[..cut].to_vec(), expect));
        }
    }
    // --- email: structure and size
    cases.push(mail("multipart nested 5000 levels", nested_multipart(5000), Applied));
    let long_header = format!("X-Hostile: {}", "a".repeat(2 * MIB));
    cases.push(mail(
        "2 MiB single header line",
        email(
            &format!(
                "From: ada@customer.test\nTo: {HOSTILE_MAILBOX}\nSubject: long header\nMessage-ID: <long-header@hostile.test>\n{long_header}\n"
            ),
            b"body\r\n",
        ),
        Applied,
    ));
    cases.push(mail(
        "2 MiB Subject",
        email(
            &format!(
                "From: ada@customer.test\nTo: {HOSTILE_MAILBOX}\nSubject: {}\nMessage-ID: <long-subject@hostile.test>\n",
                "s".repeat(2 * MIB)
            ),
            b"body\r\n",
        ),
        Applied,
    ));
    let mut bad_utf8 = b"From: \"Ad\xc3\x28 \xff\xfe\" <ada@customer.test>\r\nTo: support@hostile.test\r\nSubject: caf\xe9 \xf0\x28\x8c\x28\r\nMessage-ID: <bad-utf8@hostile.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    bad_utf8.extend_from_slice(b"invalid \xc0\xaf utf-8 \xed\xa0\x80 in the body\r\n");
    cases.push(mail("invalid UTF-8 in headers and body", bad_utf8, Applied));
    cases.push(mail(
        "NUL bytes in Subject and body (stored as U+FFFD)",
        simple_email("nul@hostile.test", "a\0b", "before\0after\n"),
        Applied,
    ));
    cases.push(mail(
        "SQL-looking strings in every field",
        email(
            &format!(
                "From: \"{SQL}\" <sql@customer.test>\nReply-To: \"{SQL}\" <sql@customer.test>\nTo: {HOSTILE_MAILBOX}\n\
                 Subject: {SQL}\nMessage-ID: <';DROP-TABLE-messages;--@hostile.test>\nX-Hostile: {SQL}\n\
                 Content-Type: text/plain; charset=utf-8\n"
            ),
            format!("{SQL}\n").as_bytes(),
        ),
        Applied,
    ));
    let mut big = simple_email("twenty-mib@hostile.test", "20 MiB", "");
    big.extend(
        std::iter::repeat_n(b"twenty mebibytes of text, just under the limit\r\n".as_slice(), 20 * MIB / 48).flatten(),
    );
    cases.push(mail(&format!("{} MiB body (under the 25 MiB limit)", big.len() / MIB), big, Applied));
    let mut huge = simple_email("fifty-mib@hostile.test", "50 MiB", "");
    huge.resize(50 * MIB, b'x');
    cases.push(mail("50 MiB body (over the 25 MiB limit)", huge, Dead("payload_too_large")));
    cases.push(Case::new(
        "email: unknown entry point (no envelope)",
        "email.email",
        email(
            "From: ada@customer.test\nTo: nobody@nowhere.test\nSubject: lost\nMessage-ID: <lost@hostile.test>\n",
            b"lost\r\n",
        ),
        Some(Dead("unknown_entry_point")),
    ));
    cases.push(mail(
        "JSON body on an email key",
        br#"{"id":"x","body":"not mail"}"#.to_vec(),
        Dead("malformed_payload"),
    ));
    cases.push(
        mail(
            "content_type application/json on a valid mail",
            simple_email("wrong-ct@hostile.test", "wrong content type", "fine\n"),
            Applied,
        )
        .content_type("application/json"),
    );
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    cases.push(mail("64 KiB of binary garbage", garbage, Dead("malformed_payload")));
    cases.push(
        mail(
            "invalid UTF-8 in an AMQP header",
            simple_email("amqp-header@hostile.test", "amqp header", "fine\n"),
            Applied,
        )
        .header("x-hostile", AMQPValue::LongString(b"\xff\xfe\xc3\x28".to_vec().into())),
    );
    cases.push(
        Case::new(
            "email: envelope id invalid UTF-8, mail names no known mailbox",
            "email.email",
            email(
                "From: ada@customer.test\nTo: nobody@nowhere.test\nSubject: lost\nMessage-ID: <lost-2@hostile.test>\n",
                b"lost\r\n",
            ),
            Some(Dead("unknown_entry_point")),
        )
        .header(intake::amqp::envelope::EXTERNAL_CHANNEL_ID, AMQPValue::LongString(b"\xff\xfe".to_vec().into())),
    );

    // --- chat
    let chat = |label: &str, key: &str, body: Vec<u8>, expect: Expect| {
        Case::new(format!("chat: {label}"), key, body, Some(expect))
    };
    let mut slack_bad = fixture("chat", "slack_message.json");
    let at = slack_bad.windows(4).position(|w| w == b"Live").unwrap();
    slack_bad.splice(at..at, b"\xff\xfe\xc3\x28".iter().copied());
    cases.push(chat("slack fixture with invalid UTF-8 in text", "chat.slack", slack_bad, Dead("malformed_payload")));
    cases.push(chat("100k nested [", "chat.slack", vec![b'['; 100_000], Dead("malformed_payload")));
    cases.push(chat(
        "100k nested {\"a\":",
        "chat.telegram",
        "{\"a\":".repeat(100_000).into_bytes(),
        Dead("malformed_payload"),
    ));
    let array = |n: usize| {
        let mut v = b"[".to_vec();
        v.extend(std::iter::repeat_n(b"0,".as_slice(), n).flatten());
        v.extend_from_slice(b"0]");
        v
    };
    cases.push(chat("array of 450k zeros (900 KB)", "chat.whatsapp", array(450_000), Dead("malformed_payload")));
    cases.push(chat("array of 2.5M zeros (5 MB)", "chat.slack", array(2_500_000), Dead("payload_too_large")));
    let digits = "9".repeat(1_000_000);
    let mut number_used: serde_json::Value = serde_json::from_slice(&fixture("chat", "slack_message.json")).unwrap();
    number_used["event_time"] = json!("NUMBER");
    let number_used = serde_json::to_string(&number_used).unwrap().replace("\"NUMBER\"", &digits);
    // serde skips a field it does not read without converting it: the envelope's event_time is
    // never read, so this is the fixture's message again (a duplicate, applied once).
    cases.push(chat(
        "10^6-digit number in an unread field (event_time)",
        "chat.slack",
        number_used.into_bytes(),
        Applied,
    ));
    cases.push(chat(
        "NUL in text (\\u0000, stored as U+FFFD)",
        "chat.slack",
        slack("1764100000.000100", HOSTILE_SLACK, "U0NUL", "Nul", "a\u{0}b"),
        Applied,
    ));
    let mut raw_nul = slack("1764100001.000100", HOSTILE_SLACK, "U0NUL", "Nul", "aXb");
    let x = raw_nul.windows(3).position(|w| w == b"aXb").unwrap() + 1;
    raw_nul[x] = 0;
    cases.push(chat("raw NUL byte inside a JSON string", "chat.slack", raw_nul, Dead("malformed_payload")));
    cases.push(chat(
        "SQL-looking strings in every field",
        "chat.slack",
        slack("1764100002.000100", HOSTILE_SLACK, SQL, SQL, SQL),
        Applied,
    ));
    cases.push(chat(
        "unknown entry point (channel CNOWHERE)",
        "chat.slack",
        slack("1764100003.000100", "CNOWHERE", "U1", "Ada", "hi"),
        Dead("unknown_entry_point"),
    ));
    cases.push(chat(
        "unknown adapter key chat.icq",
        "chat.icq",
        slack("1764100004.000100", HOSTILE_SLACK, "U1", "Ada", "hi"),
        Dead("unknown_adapter"),
    ));
    cases.push(chat(
        "Twilio form body on chat.slack",
        "chat.slack",
        fixture("chat", "twilio_sms_legacy.form"),
        Dead("malformed_payload"),
    ));
    cases.push(
        chat(
            "Slack JSON on chat.twilio-sms",
            "chat.twilio-sms",
            fixture("chat", "slack_message.json"),
            Dead("malformed_payload"),
        )
        .content_type("application/json"),
    );
    cases.push(chat(
        "Slack JSON on chat.telegram",
        "chat.telegram",
        fixture("chat", "slack_message.json"),
        Dead("malformed_payload"),
    ));
    cases.push(chat("{} on chat.slack", "chat.slack", b"{}".to_vec(), Dead("malformed_payload")));
    cases.push(chat("{} on chat.whatsapp", "chat.whatsapp", b"{}".to_vec(), Dead("malformed_payload")));
    cases.push(chat("{} on chat.telegram", "chat.telegram", b"{}".to_vec(), Dead("malformed_payload")));
    cases.push(
        chat(
            "valid Slack message sent as text/plain",
            "chat.slack",
            slack("1764100005.000100", HOSTILE_SLACK, "U1", "Ada", "plain"),
            Applied,
        )
        .content_type("text/plain"),
    );
    cases.push(chat("empty body", "chat.slack", vec![], Dead("malformed_payload")));

    // --- generic webhook
    let hook = |label: &str, body: Vec<u8>, expect: Expect| {
        Case::new(format!("webhook: {label}"), "webhook.webhook", body, Some(expect)).envelope(HOSTILE_SHOP)
    };
    cases.push(hook("100k nested [", vec![b'['; 100_000], Dead("malformed_payload")));
    let long_id = serde_json::to_vec(&json!({"id": "long-ep", "direction": "inbound", "body": "x",
        "externalChannelId": format!("nowhere-{}", "x".repeat(300 * 1024))}))
    .unwrap();
    // Resolved through the envelope's entry point. Without one it would be dead-lettered with the
    // 300 KiB id quoted in x-intake-error (see the test of clipped errors below).
    cases.push(hook("300 KiB unknown externalChannelId, envelope names `shop`", long_id, Applied));
    let number = format!(r#"{{"id":"big-number","direction":"inbound","body":"x","metadata":{{"n":{digits}}}}}"#);
    cases.push(hook("10^6-digit number in metadata", number.into_bytes(), Dead("malformed_payload")));
    let many: Vec<serde_json::Value> = (0..2000)
        .map(|i| {
            json!({"id": format!("bulk-{i}"), "conversationKey": format!("bulk-{}", i % 10),
                        "direction": "inbound", "body": format!("bulk {i}")})
        })
        .collect();
    cases.push(hook("array of 2000 valid messages", serde_json::to_vec(&many).unwrap(), Applied));
    cases.push(hook("array of 2.5M zeros (5 MB)", array(2_500_000), Dead("payload_too_large")));
    let sql_everything = serde_json::to_vec(&json!({
        "id": SQL, "conversationKey": SQL, "direction": "inbound", "body": SQL, "subject": SQL,
        "sender": {"id": SQL, "displayName": SQL, "primaryEmail": SQL, "profileImageUrl": SQL},
        "attachments": [{"fileName": SQL, "mediaType": SQL}],
        "metadata": {SQL: SQL}, "inReplyTo": [SQL], "externalChannelId": SQL_SHOP}))
    .unwrap();
    cases.push(hook("SQL-looking strings in every field (and the entry point id)", sql_everything, Applied));
    cases.push(hook(
        "NUL in body (\\u0000, stored as U+FFFD)",
        br#"{"id":"nul-1","direction":"inbound","body":"a\u0000b"}"#.to_vec(),
        Applied,
    ));
    cases.push(hook(
        "raw NUL byte in JSON",
        b"{\"id\":\"nul-2\",\"direction\":\"inbound\",\"body\":\"a\0b\"}".to_vec(),
        Dead("malformed_payload"),
    ));
    cases.push(hook(
        "invalid UTF-8 in JSON string",
        b"{\"id\":\"utf8\",\"direction\":\"inbound\",\"body\":\"caf\xe9\"}".to_vec(),
        Dead("malformed_payload"),
    ));
    let mut twenty = b"{\"id\":\"twenty\",\"direction\":\"inbound\",\"body\":\"".to_vec();
    twenty.resize(20 * MIB, b'x');
    twenty.extend_from_slice(b"\"}");
    cases.push(hook("20 MiB JSON (over the adapter's 1 MiB)", twenty, Dead("payload_too_large")));
    cases.push(
        Case::new(
            "webhook: unknown entry point",
            "webhook.webhook",
            webhook("nowhere-1", "x"),
            Some(Dead("unknown_entry_point")),
        )
        .envelope("nowhere"),
    );
    cases.push(Case::new(
        "webhook: no entry point named at all",
        "webhook.webhook",
        webhook("nowhere-2", "x"),
        Some(Dead("missing_entry_point")),
    ));
    cases.push(
        Case::new(
            "webhook: envelope id header is an AMQP table",
            "webhook.webhook",
            webhook("nowhere-3", "x"),
            Some(Dead("missing_entry_point")),
        )
        .header(intake::amqp::envelope::EXTERNAL_CHANNEL_ID, AMQPValue::FieldTable(FieldTable::default())),
    );
    cases.push(
        Case::new(
            "webhook: unknown adapter key",
            "webhook.nope",
            webhook("nope-1", "x"),
            Some(Dead("unknown_adapter")),
        )
        .envelope(HOSTILE_SHOP),
    );
    cases.push(Case::new(
        "unroutable: webhook.webhook.evil",
        "webhook.webhook.evil",
        webhook("e", "x"),
        Some(Unroutable),
    ));
    cases.push(Case::new("unroutable: fax.x", "fax.x", webhook("f", "x"), Some(Unroutable)));
    cases
}

// ---------------------------------------------------------------------------------------------
// what the adapters say (pure), used for the fixtures' expectations and the keys to look for
// ---------------------------------------------------------------------------------------------

async fn pure_decode(registry: &AdapterRegistry, case: &Case) -> Option<Result<Vec<NormalizedUpdate>, String>> {
    let (channel_type, key, _) = intake::amqp::envelope::parse_routing_key(&case.routing_key).ok()?;
    let adapter = registry.get(channel_type, key)?;
    let headers = Headers::new();
    let delivery = Delivery {
        body: &case.body,
        headers: &headers,
        external_channel_id: case.envelope.as_deref(),
        received_at: chrono::Utc::now(),
    };
    Some(adapter.decode(&delivery).await.map_err(|e| e.reason_code().to_owned()))
}

fn is_append(u: &NormalizedUpdate) -> bool {
    matches!(u.action, UpdateAction::Append(_))
}

// ---------------------------------------------------------------------------------------------
// the worker process
// ---------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn_worker(db: &TestDb, broker: &TestBroker, http_addr: &str, log: &Path) -> Child {
    worker_command(&db.url, &broker.topology)
        .arg("--with-api")
        .env("INTAKE_HTTP_ADDR", http_addr)
        .env_remove("INTAKE_MAX_MESSAGE_BYTES") // the default 25 MiB
        // The health sampler's dead-queue scan would hide letters from the test's own listing
        // for a moment; this test is not about it (tests/health.rs is).
        .env("INTAKE_HEALTH_SAMPLE_EVERY", "1h")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start intake worker")
}

/// (VmHWM, VmRSS) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn scrape(http: &reqwest::Client, addr: &str) -> String {
    match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_applied_or_dead_lettered_with_its_reason_and_the_worker_survives() {
    use Expect::Dead;
    if std::env::var_os("RUST_LOG").is_none() {
        // lapin warns with the whole body of every returned (unroutable) message.
        std::env::set_var("RUST_LOG", "warn,lapin=error");
    }
    let started = Instant::now();
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    let registry = AdapterRegistry::with_defaults();

    // The publish list: real fixtures first (each followed by nothing: they are valid or
    // not on their own), then every hostile input followed by a valid message on its queue.
    let mut cases: Vec<Case> = real_fixtures()
        .into_iter()
        .map(|(label, key, body)| {
            let mut c = Case::new(format!("fixture {label}"), &key, body, None);
            if key.ends_with("twilio-sms") {
                c.content_type = "application/x-www-form-urlencoded".into();
            }
            c
        })
        .collect();
    let fixture_count = cases.len();
    let mut n = 0;
    for case in hostile_cases() {
        let good = good_after(&case, n);
        cases.push(case);
        if let Some(good) = good {
            cases.push(good);
            n += 1;
        }
    }

    // Entry points: the hostile ones, plus the first channel id every decodable fixture names.
    store_entry_points(&db).await;
    let mut registered: std::collections::HashSet<(ChannelType, String)> = Default::default();
    let mut verdicts = vec![];
    for case in &cases {
        let verdict = pure_decode(&registry, case).await;
        if case.expect.is_none() {
            for update in verdict.iter().flatten().flatten() {
                let channel = case.channel().unwrap();
                let key = case.routing_key.split('.').nth(1).unwrap();
                if let Some(first) = update.channel_id_candidates(None).first() {
                    let external = intake::store::normalize_external_channel_id(channel, first);
                    if registered.insert((channel, external.clone())) {
                        db.project_with_entry_point("p", channel, key, &external).await;
                    }
                }
            }
        }
        verdicts.push(verdict);
    }

    // Expectations: fixtures as the adapter decides, with the worker's rules on top (an edit,
    // delete or status whose message never arrives is parked; both count as applied).
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut expected: Vec<Expect> = vec![];
    let mut applied_keys: BTreeSet<String> = BTreeSet::new();
    let mut changes = 0u64;
    for (case, verdict) in cases.iter().zip(&verdicts) {
        let expect = match (&case.expect, verdict) {
            (Some(e), _) => e.clone(),
            (None, Some(Err(reason))) => Dead(static_reason(reason)),
            (None, Some(Ok(updates))) if updates.is_empty() => Expect::Skipped,
            (None, Some(Ok(_))) => Expect::Applied,
            (None, None) => panic!("{}: no adapter", case.label),
        };
        if expect == Expect::Applied {
            let updates = match verdict {
                Some(Ok(u)) => u,
                other => panic!("{}: expected to apply but the adapter says {other:?}", case.label),
            };
            for u in updates {
                if is_append(u) {
                    known.insert(u.idempotency_key().to_owned());
                    applied_keys.insert(u.idempotency_key().to_owned());
                } else {
                    changes += 1;
                }
            }
        }
        expected.push(expect);
    }
    // Run the real binary and publish everything, pipelined.
    let http_addr = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!("intake-hostile-{}.log", uuid::Uuid::new_v4().simple()));
    let mut worker = spawn_worker(&db, &broker, &http_addr, &log);
    let pid = worker.id().unwrap();
    let http = reqwest::Client::new();
    wait_until(30, "the worker's HTTP API", || async {
        http.get(format!("http://{http_addr}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;

    let mut items = vec![];
    for (i, case) in cases.iter().enumerate() {
        if expected[i] == Expect::Unroutable {
            let result = broker
                .publisher
                .publish(&broker.topology.exchange, &case.routing_key, &case.body, props(i, case))
                .await;
            assert!(matches!(result, Err(PublishError::Unroutable { .. })), "{}: {result:?}", case.label);
            continue;
        }
        items.push((case.routing_key.clone(), case.body.clone(), props(i, case)));
    }
    let published = items.len() as u64;
    broker.publisher.publish_pipelined(&broker.topology.exchange, items, 64).await.unwrap();
    let publish_secs = started.elapsed().as_secs_f64();

    // Wait until every delivery is decided: the dead queue, the stored messages, the skipped and
    // changed counts are what they should be (or 45 s pass: the table then shows what is not).
    let want_dead = expected.iter().filter(|e| matches!(e, Dead(_))).count() as u32;
    let want_skipped = expected.iter().filter(|e| **e == Expect::Skipped).count() as u64;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut timed_out = false;
    loop {
        assert!(worker.try_wait().unwrap().is_none(), "the worker died; log:\n{}", tail(&log));
        let m = scrape(&http, &http_addr).await;
        let dead = broker.depth(&broker.topology.dead_queue).await;
        let stored = count(&db.pool, &format!("SELECT count(DISTINCT {CHANNEL_KEY}) FROM messages")).await as usize;
        if dead == want_dead
            && stored == applied_keys.len()
            && metric(&m, "intake_messages_skipped_total", "") == want_skipped
            && changed_or_parked(&m) == changes
        {
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            println!("timed out: dead {dead}/{want_dead}, stored {stored}/{}", applied_keys.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let decided_secs = started.elapsed().as_secs_f64();
    let metrics = scrape(&http, &http_addr).await;
    let (peak_kib, rss_kib) = memory_kib(pid);
    assert!(worker.try_wait().unwrap().is_none(), "the worker is still alive");

    // What happened to each message.
    let letters = broker.dead_letters().await;
    let mut dead_by_id: HashMap<String, (String, String)> = HashMap::new();
    for d in &letters {
        let id = d.message_id.clone().unwrap_or_default();
        assert!(dead_by_id.insert(id.clone(), (d.reason.clone(), d.error.clone())).is_none(), "{id} dead twice");
    }
    let db_keys: BTreeSet<String> = sqlx::query_scalar(&format!("SELECT {CHANNEL_KEY} FROM messages"))
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let mut rows = vec![];
    let mut failures = vec![];
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let id = message_id(i);
        let keys: Vec<String> = match &verdicts[i] {
            Some(Ok(u)) => u.iter().filter(|u| is_append(u)).map(|u| u.idempotency_key().to_owned()).collect(),
            _ => vec![],
        };
        // Skips and edits are only visible in aggregate (the metrics, checked below).
        let outcome = match (&expected[i], dead_by_id.get(&id), &verdicts[i]) {
            (Expect::Unroutable, _, _) => Expect::Unroutable.to_string(),
            (_, Some((reason, _)), _) => format!("dead: {reason}"),
            (_, None, Some(Ok(u))) if u.is_empty() => "skipped".to_string(),
            (_, None, Some(Ok(_))) if keys.iter().all(|k| db_keys.contains(k)) => "applied".to_string(),
            _ => "MISSING".to_string(),
        };
        let pure = match &verdicts[i] {
            None => "no adapter".to_string(),
            Some(Err(reason)) => format!("error {reason}"),
            Some(Ok(u)) if u.is_empty() => "nothing to apply".to_string(),
            Some(Ok(u)) => {
                let appends = u.iter().filter(|u| is_append(u)).count();
                match (appends, u.len() - appends) {
                    (a, 0) => format!("{a} append(s)"),
                    (0, c) => format!("{c} change(s)"),
                    (a, c) => format!("{a} append(s), {c} change(s)"),
                }
            }
        };
        *tally
            .entry(if outcome.starts_with("dead") { "dead-lettered" } else { outcome_kind(&outcome) })
            .or_default() += 1;
        if outcome != expected[i].to_string() {
            let error = dead_by_id.get(&id).map(|d| d.1.as_str()).unwrap_or_default();
            failures.push(format!("{id} {}: expected {}, got {outcome} {error}", case.label, expected[i]));
        }
        if i >= fixture_count || outcome != "applied" {
            rows.push(format!(
                "| {id} | {} | {} | {} | {pure} | {outcome} |",
                case.label.replace('|', "\\|"),
                human(case.body.len()),
                case.routing_key
            ));
        }
    }
    let fixtures_summary: BTreeMap<String, usize> =
        expected[..fixture_count].iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e.to_string()).or_default() += 1;
            m
        });
    println!("\nHostile input through the `intake worker` binary (pid {pid}):");
    println!("{} real fixture deliveries: {fixtures_summary:?} (only the ones not applied are listed)", fixture_count);
    println!("| id | input | size | routing key | adapter alone | outcome |\n| --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        println!("{row}");
    }
    let skipped = metric(&metrics, "intake_messages_skipped_total", "");
    println!(
        "published {published} (+{} refused at publish); {tally:?}; skipped per metric {skipped}; \
         peak RSS (VmHWM) {} MiB, RSS now {} MiB; published in {publish_secs:.1}s, all decided at {decided_secs:.1}s",
        expected.iter().filter(|e| **e == Expect::Unroutable).count(),
        peak_kib / 1024,
        rss_kib / 1024
    );

    assert!(!timed_out || !failures.is_empty(), "timed out although every outcome is right");
    assert!(
        failures.is_empty(),
        "{} unexpected outcomes:\n{}\nworker log tail:\n{}",
        failures.len(),
        failures.join("\n"),
        tail(&log)
    );
    // Nothing silently dropped: every published delivery is accounted for.
    let dead = letters.len() as u64;
    let applied = expected.iter().filter(|e| **e == Expect::Applied).count() as u64;
    assert_eq!(skipped, want_skipped, "skipped deliveries per the worker's metric");
    assert_eq!(applied + dead + skipped, published, "applied + dead-lettered + skipped == published");
    assert_eq!(db_keys, applied_keys, "exactly the applied messages are stored");
    assert_eq!(changed_or_parked(&metrics), changes, "every edit, delete and status applied or parked");
    assert_eq!(metric(&metrics, "intake_worker_reconnects_total", ""), 0, "no worker session was lost");
    let logged_dead = std::fs::read_to_string(&log).unwrap().matches("message dead-lettered").count() as u64;
    assert_eq!(logged_dead, dead, "every dead letter is logged");
    for queue in broker.topology.all_queues().into_iter().filter(|q| *q != broker.topology.dead_queue) {
        assert_eq!(broker.depth(&queue).await, 0, "{queue} drained");
    }

    // Stored verbatim.
    let (body, subject, sender, name): (String, Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        &format!("SELECT body, subject, sender_id, sender_display_name FROM messages WHERE {CHANNEL_KEY} = $1"),
    )
    .bind(SQL)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (body.as_str(), subject.as_deref(), sender.as_deref(), name.as_deref()),
        (SQL, Some(SQL), Some(SQL), Some(SQL))
    );
    let ep: String = sqlx::query_scalar(&format!(
        "SELECT e.external_channel_id FROM messages m JOIN entry_points e ON e.id = m.entry_point_id \
             WHERE {CHANNEL_KEY} = $1"
    ))
    .bind(SQL)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(ep, SQL_SHOP);
    let (body, name): (String, Option<String>) = sqlx::query_as(
        "SELECT body, sender_display_name FROM messages WHERE idempotency_key = 'slack:CHOSTILE1:1764100002.000100'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((body.as_str(), name.as_deref()), (SQL, Some(SQL)));
    let (key, body, subject, name): (String, String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT idempotency_key, body, subject, sender_display_name FROM messages
          WHERE sender_primary_email = 'sql@customer.test'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(key, "';DROP-TABLE-messages;--@hostile.test");
    assert_eq!(name.as_deref(), Some(SQL));
    assert_eq!((body.trim_end(), subject.as_deref()), (SQL, Some(SQL)));
    assert_eq!(
        count(&db.pool, &format!("SELECT count(*) FROM messages WHERE {CHANNEL_KEY} LIKE 'bulk-%'")).await,
        2000
    );

    assert!(peak_kib < 1024 * 1024, "peak RSS {} MiB is over 1 GiB", peak_kib / 1024);
    let goods = cases.iter().filter(|c| c.good).count();
    println!("{goods} valid messages interleaved with the hostile ones: all applied");

    // Still healthy: a graceful stop exits 0.
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "worker exit status {status}; log: {}", tail(&log));
    let _ = std::fs::remove_file(&log);
    broker.cleanup().await;
}

async fn store_entry_points(db: &TestDb) {
    db.project_with_entry_point("p", ChannelType::Email, "email", HOSTILE_MAILBOX).await;
    db.project_with_entry_point("p", ChannelType::Chat, "slack", HOSTILE_SLACK).await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", HOSTILE_SHOP).await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", SQL_SHOP).await;
}

fn static_reason(reason: &str) -> &'static str {
    match reason {
        "malformed_payload" => "malformed_payload",
        "payload_too_large" => "payload_too_large",
        "missing_field" => "missing_field",
        "unsupported_event" => "unsupported_event",
        other => panic!("unknown adapter reason {other}"),
    }
}

fn outcome_kind(outcome: &str) -> &'static str {
    match outcome {
        "applied" => "applied",
        "skipped" => "skipped",
        "MISSING" => "MISSING",
        _ => "refused at publish",
    }
}

fn message_id(i: usize) -> String {
    format!("h{i:03}")
}

fn props(i: usize, case: &Case) -> lapin::BasicProperties {
    let headers = case.envelope.clone().map(|e| (intake::amqp::envelope::EXTERNAL_CHANNEL_ID, e));
    let props = new_message_properties(&message_id(i), &case.content_type, headers);
    let mut table = props.headers().clone().unwrap_or_default();
    for (name, value) in &case.raw_headers {
        table.insert((*name).into(), value.clone());
    }
    props.with_headers(table)
}

fn human(bytes: usize) -> String {
    match bytes {
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= 1024 => format!("{:.0} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..]
        .iter()
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error that quotes a long payload value (an unknown 300 KiB entry point id, a status for a
/// 300 KiB message id) must be clipped in `x-intake-error`: a header frame over RabbitMQ's
/// `frame_max` (128 KiB) makes the broker close the worker's connection (FRAME_ERROR), and the
/// redelivered message would do it again, stalling every queue of that worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_quoting_a_huge_value_is_dead_lettered_and_does_not_wedge_the_worker() {
    let db = TestDb::new().await;
    let broker = TestBroker::new().await;
    db.project_with_entry_point("p", ChannelType::Webhook, "webhook", HOSTILE_SHOP).await;
    db.project_with_entry_point("p", ChannelType::Chat, "whatsapp", "106540352242922").await;
    let http_addr = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!("intake-hostile-{}.log", uuid::Uuid::new_v4().simple()));
    let mut worker = spawn_worker(&db, &broker, &http_addr, &log);
    let huge = "x".repeat(300 * 1024);
    // Unknown entry point: the error lists the 300 KiB id.
    let long_id = serde_json::to_vec(&json!({"id": "long-ep", "direction": "inbound", "body": "x",
        "externalChannelId": format!("nowhere-{huge}")}))
    .unwrap();
    broker.publish("webhook.webhook", None, &long_id).await;
    // A status naming a 300 KiB message id: refused up front (no index could hold the key);
    // both errors quote the id.
    let status = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [{"id": format!("wamid.{huge}"), "status": "delivered", "timestamp": "1739321024",
                          "recipient_id": "16505551234"}]}}]}]}))
    .unwrap();
    broker.publish("chat.whatsapp", None, &status).await;
    broker.publish("webhook.webhook", Some(HOSTILE_SHOP), &webhook("after-the-long-one", "fine")).await;

    let http = reqwest::Client::new();
    wait_until(30, "both dead-lettered and the next message applied", || async {
        broker.depth(&broker.topology.dead_queue).await == 2
            && count(&db.pool, "SELECT count(*) FROM messages WHERE idempotency_key LIKE '%:after-the-long-one'").await
                == 1
    })
    .await;
    let mut reasons: Vec<(String, usize)> =
        broker.dead_letters().await.into_iter().map(|d| (d.reason, d.error.len())).collect();
    reasons.sort();
    assert_eq!(reasons.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["field_too_long", "unknown_entry_point"]);
    assert!(reasons.iter().all(|r| r.1 <= intake::amqp::envelope::MAX_ERROR_HEADER_BYTES), "{reasons:?}");
    let metrics = scrape(&http, &http_addr).await;
    assert_eq!(metric(&metrics, "intake_worker_reconnects_total", ""), 0, "log:\n{}", tail(&log));
    assert!(worker.try_wait().unwrap().is_none());
    let _ = worker.kill().await;
    let _ = std::fs::remove_file(&log);
    broker.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// the webhook gateway
// ---------------------------------------------------------------------------------------------

struct Gateway {
    db: TestDb,
    broker: TestBroker,
    url: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let broker = TestBroker::new().await;
        let url = spawn_gateway(db.pool.clone(), &broker.topology, MIB).await; // the default INTAKE_GATEWAY_BODY_LIMIT
        for (channel, adapter, external, secret) in [
            (ChannelType::Webhook, "webhook", HOSTILE_SHOP, WHSEC),
            (ChannelType::Webhook, "webhook", SQL_SHOP, WHSEC),
            (ChannelType::Chat, "slack", "C0SUPPORT", SLACK_SECRET),
            (ChannelType::Chat, "twilio-sms", "+15005550006", "12345678twiliotoken"),
            (ChannelType::Chat, "whatsapp", "106540352242922", "meta-app-secret"),
            (ChannelType::Chat, "telegram", "bot-1", "tg_secret-token"),
        ] {
            intake::store::ensure_project(&db.pool, "acme").await.unwrap();
            intake::store::create_entry_point_with_secrets(
                &db.pool,
                "acme",
                channel,
                adapter,
                external,
                json!({}),
                &[secret.to_string()],
                None,
            )
            .await
            .unwrap();
        }
        Gateway { db, broker, url, http: reqwest::Client::new() }
    }

    /// Status and answer; a transport error (the server closed the connection) is `None`.
    async fn post(&self, path: &str, headers: &[(&str, Vec<u8>)], body: Vec<u8>) -> (Option<u16>, String) {
        let mut req = self.http.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            req = req.header(*k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
        }
        match req.send().await {
            Ok(resp) => (Some(resp.status().as_u16()), resp.text().await.unwrap_or_default()),
            Err(e) => (None, e.to_string()),
        }
    }

    /// Messages published so far: everything the gateway can publish to, plus the dead queue.
    async fn published(&self) -> u32 {
        let t = &self.broker.topology;
        self.broker.depth(&t.queue(ChannelType::Webhook)).await
            + self.broker.depth(&t.queue(ChannelType::Chat)).await
            + self.broker.depth(&t.queue(ChannelType::Email)).await
            + self.broker.depth(&t.dead_queue).await
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn standard(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("content-type", b"application/json".to_vec()),
        ("webhook-id", id.into()),
        ("webhook-timestamp", ts.to_string().into_bytes()),
        ("webhook-signature", sign_standard_webhooks(secret, id, ts, body).unwrap().into_bytes()),
    ]
}

fn slack_signed(secret: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    vec![
        ("content-type", b"application/json".to_vec()),
        ("x-slack-request-timestamp", ts.to_string().into_bytes()),
        ("x-slack-signature", format!("v0={}", hex::encode(mac.finalize().into_bytes())).into_bytes()),
    ]
}

fn without(mut headers: Vec<(&'static str, Vec<u8>)>, name: &str) -> Vec<(&'static str, Vec<u8>)> {
    headers.retain(|(k, _)| *k != name);
    headers
}

fn with(mut headers: Vec<(&'static str, Vec<u8>)>, name: &'static str, value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    headers.retain(|(k, _)| *k != name);
    headers.push((name, value.to_vec()));
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_the_gateway_are_refused_and_publish_nothing() {
    let metrics = intake::metrics::handle(); // count the gateway's requests in this process
    let g = Gateway::start().await;
    let body = webhook("evt-1", "My order has not arrived");
    let other = webhook("evt-2", "a different body");
    let good = || standard(WHSEC, "msg_1", now(), &body);
    // Would match every entry point if the lookup were SQL built from strings.
    let sql_path = "/hooks/webhook/'%20OR%20'1'%3D'1";
    let mut fifty = body.clone();
    fifty.resize(50 * MIB, b' ');
    let mut bad_utf8 = b"{\"id\":\"caf\xe9\",\"direction\":\"inbound\",\"body\":\"\xff\xfe\"}".to_vec();
    bad_utf8.extend_from_slice(b"\xc3\x28");
    let slack_body = slack("1764000000.000100", "C0SUPPORT", "U1", "Ada", "hi");
    let challenge = br#"{"token":"t","challenge":"abc123","type":"url_verification"}"#.to_vec();
    let twilio_form = b"MessageSid=SM1&From=%2B14155550100&To=%2B15005550006&Body=hi".to_vec();
    let wa = br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec();

    // (label, path, headers, body, expected status: None = the connection may be cut, published?)
    type Request = (&'static str, String, Vec<(&'static str, Vec<u8>)>, Vec<u8>, u16, bool);
    let hooks = "/hooks/webhook/shop".to_string();
    let requests: Vec<Request> = vec![
        ("valid Standard Webhooks request", hooks.clone(), good(), body.clone(), 200, true),
        (
            "signed with another secret",
            hooks.clone(),
            standard("whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldA==", "msg_1", now(), &body),
            body.clone(),
            401,
            false,
        ),
        ("signature of another body", hooks.clone(), good(), other.clone(), 401, false),
        (
            "timestamp 10 min old (replay)",
            hooks.clone(),
            standard(WHSEC, "msg_1", now() - 600, &body),
            body.clone(),
            401,
            false,
        ),
        (
            "timestamp 10 min ahead",
            hooks.clone(),
            standard(WHSEC, "msg_1", now() + 600, &body),
            body.clone(),
            401,
            false,
        ),
        (
            "timestamp of another signed request",
            hooks.clone(),
            with(good(), "webhook-timestamp", (now() - 1).to_string().as_bytes()),
            body.clone(),
            401,
            false,
        ),
        ("no webhook-id", hooks.clone(), without(good(), "webhook-id"), body.clone(), 401, false),
        ("no webhook-timestamp", hooks.clone(), without(good(), "webhook-timestamp"), body.clone(), 401, false),
        ("no webhook-signature", hooks.clone(), without(good(), "webhook-signature"), body.clone(), 401, false),
        ("no headers at all", hooks.clone(), vec![], body.clone(), 401, false),
        ("timestamp `soon`", hooks.clone(), with(good(), "webhook-timestamp", b"soon"), body.clone(), 401, false),
        ("signature not base64", hooks.clone(), with(good(), "webhook-signature", b"v1,!!!"), body.clone(), 401, false),
        (
            "100 KiB of signature candidates",
            hooks.clone(),
            with(good(), "webhook-signature", "v1,AAAA ".repeat(12_800).as_bytes()),
            body.clone(),
            401,
            false,
        ),
        (
            "invalid UTF-8 in webhook-signature",
            hooks.clone(),
            with(good(), "webhook-signature", b"v1,\xff\xfe"),
            body.clone(),
            401,
            false,
        ),
        ("50 MiB body (limit 1 MiB)", hooks.clone(), standard(WHSEC, "msg_big", now(), &fifty), fifty, 413, false),
        (
            "invalid UTF-8 body, validly signed (transport only)",
            hooks.clone(),
            standard(WHSEC, "msg_utf8", now(), &bad_utf8),
            bad_utf8.clone(),
            200,
            true,
        ),
        (
            "text/plain content type, validly signed",
            hooks.clone(),
            with(good(), "content-type", b"text/plain"),
            body.clone(),
            200,
            true,
        ),
        (
            "1000-byte content type, validly signed",
            hooks.clone(),
            with(good(), "content-type", format!("application/{}", "x".repeat(1000)).as_bytes()),
            body.clone(),
            200,
            true,
        ),
        (
            "the same request again (within tolerance)",
            hooks.clone(),
            standard(WHSEC, "msg_1", now(), &body),
            body.clone(),
            200,
            true,
        ),
        ("SQL-looking entry point in the path", sql_path.to_string(), good(), body.clone(), 404, false),
        (
            "SQL-looking adapter in the path",
            "/hooks/'%3B%20DROP%20TABLE%20messages%3B%20--/shop".into(),
            good(),
            body.clone(),
            404,
            false,
        ),
        (
            "SQL-looking entry point that exists, signed",
            format!("/hooks/webhook/{}", urlencode(SQL_SHOP)),
            good(),
            body.clone(),
            200,
            true,
        ),
        ("invalid UTF-8 in the path (%FF%FE)", "/hooks/webhook/%FF%FE".into(), good(), body.clone(), 400, false),
        ("unknown adapter key", "/hooks/fax/shop".into(), good(), body.clone(), 404, false),
        ("unknown entry point", "/hooks/webhook/nowhere".into(), good(), body.clone(), 404, false),
        (
            "Slack: valid",
            "/hooks/slack/C0SUPPORT".into(),
            slack_signed(SLACK_SECRET, now(), &slack_body),
            slack_body.clone(),
            200,
            true,
        ),
        (
            "Slack: wrong secret",
            "/hooks/slack/C0SUPPORT".into(),
            slack_signed("not-the-secret", now(), &slack_body),
            slack_body.clone(),
            401,
            false,
        ),
        (
            "Slack: signature of another body",
            "/hooks/slack/C0SUPPORT".into(),
            slack_signed(SLACK_SECRET, now(), &other),
            slack_body.clone(),
            401,
            false,
        ),
        (
            "Slack: timestamp 10 min old",
            "/hooks/slack/C0SUPPORT".into(),
            slack_signed(SLACK_SECRET, now() - 600, &slack_body),
            slack_body.clone(),
            401,
            false,
        ),
        (
            "Slack: no signature",
            "/hooks/slack/C0SUPPORT".into(),
            without(slack_signed(SLACK_SECRET, now(), &slack_body), "x-slack-signature"),
            slack_body.clone(),
            401,
            false,
        ),
        (
            "Slack: url_verification (answered, not published)",
            "/hooks/slack/C0SUPPORT".into(),
            slack_signed(SLACK_SECRET, now(), &challenge),
            challenge.clone(),
            200,
            false,
        ),
        (
            "Twilio: no signature",
            "/hooks/twilio-sms/+15005550006".into(),
            vec![("content-type", b"application/x-www-form-urlencoded".to_vec())],
            twilio_form.clone(),
            401,
            false,
        ),
        (
            "Twilio: forged signature",
            "/hooks/twilio-sms/+15005550006".into(),
            vec![("x-twilio-signature", b"0/KCTR6DLpKmkAf8muzZqo1nDgQ=".to_vec())],
            twilio_form.clone(),
            401,
            false,
        ),
        (
            "Twilio: invalid UTF-8 form body",
            "/hooks/twilio-sms/+15005550006".into(),
            vec![("x-twilio-signature", b"0/KCTR6DLpKmkAf8muzZqo1nDgQ=".to_vec())],
            bad_utf8.clone(),
            401,
            false,
        ),
        (
            "Meta: signature of another body",
            "/hooks/whatsapp/106540352242922".into(),
            vec![("x-hub-signature-256", format!("sha256={}", hmac_hex(b"meta-app-secret", &other)).into_bytes())],
            wa.clone(),
            401,
            false,
        ),
        ("Meta: no signature", "/hooks/whatsapp/106540352242922".into(), vec![], wa.clone(), 401, false),
        (
            "Telegram: wrong token",
            "/hooks/telegram/bot-1".into(),
            vec![("x-telegram-bot-api-secret-token", b"guess".to_vec())],
            b"{\"update_id\":1}".to_vec(),
            401,
            false,
        ),
        (
            "Telegram: token with invalid UTF-8",
            "/hooks/telegram/bot-1".into(),
            vec![("x-telegram-bot-api-secret-token", b"tg_secret-token\xff".to_vec())],
            b"{\"update_id\":1}".to_vec(),
            401,
            false,
        ),
    ];

    let mut published = 0;
    let mut failures = vec![];
    println!("\nHostile requests to the webhook gateway:\n| request | status | published |\n| --- | --- | --- |");
    for (label, path, headers, body, want, publishes) in requests {
        let (status, answer) = g.post(&path, &headers, body).await;
        if publishes {
            published += 1;
        }
        // A refused request must leave the queues as they were; an accepted one adds exactly one.
        let depth = g.published().await;
        // The gateway answers 413 without reading an oversized body and closes the connection;
        // a client still uploading (reqwest does not wait for `100 Continue`) may see the close
        // before the answer. The raw exchange below checks the 413 itself.
        let status_ok = status == Some(want) || (want == 413 && status.is_none());
        let ok = status_ok && depth == published;
        println!(
            "| {label} | {} | {} |",
            status.map_or("connection closed".into(), |s| s.to_string()),
            if publishes { "yes" } else { "no" }
        );
        if !ok {
            failures.push(format!(
                "{label}: expected {want}, got {status:?} ({}); queued {depth}, expected {published}",
                answer.chars().take(300).collect::<String>()
            ));
        }
    }
    // A declared 50 MiB body is refused before it is sent: the client asked `Expect: 100-continue`
    // and gets the 413 instead of a `100 Continue`.
    let mut stream = tokio::net::TcpStream::connect(g.url.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /hooks/webhook/shop HTTP/1.1\r\nHost: hooks.example.com\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        50 * MIB
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut stream, &mut answer))
        .await
        .expect("an answer without sending the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    println!("| 50 MiB declared, `Expect: 100-continue`, body not sent | 413 | no |");
    assert_eq!(g.published().await, published);

    // Made-up adapter keys in the path do not become metric label values (series) one by one.
    for i in 0..50 {
        let (status, _) = g.post(&format!("/hooks/made-up-{i}/x"), &good(), body.clone()).await;
        assert_eq!(status, Some(404));
    }
    let rendered = metrics.render();
    assert!(!rendered.contains("made-up-"), "unknown adapter keys became labels");
    assert!(
        rendered.contains(r#"intake_gateway_requests_total{adapter="unknown",outcome="unknown_adapter"} 52"#),
        "{rendered}"
    );
    assert_eq!(g.published().await, published);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // What was published: the right properties, the entry point from the path, verbatim bodies.
    let channel = g.broker.connection.create_channel().await.unwrap();
    let queued = intake::amqp::dlq::list(&channel, &g.broker.topology.queue(ChannelType::Webhook), 100).await.unwrap();
    let _ = channel.close(200, "".into()).await;
    let content_types: Vec<&str> = queued.iter().map(|m| m.content_type.as_deref().unwrap_or("")).collect();
    assert_eq!(
        content_types,
        [
            "application/json",
            "application/json",
            "text/plain",
            "application/json",
            "application/json",
            "application/json"
        ]
    );
    assert_eq!(queued[1].body, bad_utf8, "the body is published byte for byte");
    // The SQL-looking path did nothing to the schema, and the entry point registered with such an
    // id got its message.
    assert_eq!(count(&g.db.pool, "SELECT count(*) FROM entry_points").await, 6);
    g.broker.cleanup().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A stored key as the adapter made it: without the entry-point scope of generic-webhook keys
/// (`webhook:<externalChannelId>:`) and without the suffix of a key another message had already
/// used (`#<fingerprint prefix>`, stored as a message of its own).
const CHANNEL_KEY: &str =
    "regexp_replace(regexp_replace(idempotency_key, '#[0-9a-f]{16}$', ''), '^webhook:[^:]*:', '')";

/// Edits, deletes and statuses decided: applied to their message, or parked until it comes.
fn changed_or_parked(metrics: &str) -> u64 {
    metric(metrics, "intake_messages_applied_total", "effect=\"message_changed\"")
        + metric(metrics, "intake_messages_applied_total", "effect=\"parked\"")
}
