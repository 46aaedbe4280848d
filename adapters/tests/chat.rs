//! Every fixture in `tests/fixtures/chat/` (see `ORIGINS.md` there for where each comes from)
//! decoded through its adapter, with the updates it must produce; `refine` per adapter; the Slack
//! thread scenario; and property tests that no input makes an adapter panic.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use intake_adapters::chat::{slack, telegram, twilio, whatsapp};
use intake_adapters::chat::{SlackConfig, TelegramConfig, TwilioSmsConfig, WhatsAppConfig};
use intake_adapters::{
    AdapterError, Delivery, Direction, EntryPointInfo, Headers, NormalizedMessage, NormalizedUpdate, UpdateAction,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

const RECEIVED_AT: &str = "2026-01-01T00:00:00Z";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[derive(Clone, Copy)]
enum Provider {
    Slack,
    Telegram,
    WhatsApp,
    Twilio,
}

fn decode_with(provider: Provider, body: &[u8], envelope: Option<&str>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    let headers = Headers::new();
    let delivery = Delivery { body, headers: &headers, external_channel_id: envelope, received_at: time(RECEIVED_AT) };
    match provider {
        Provider::Slack => slack::decode(body, &delivery, &SlackConfig::default()),
        Provider::Telegram => telegram::decode(body, &delivery, &TelegramConfig::default()),
        Provider::WhatsApp => whatsapp::decode(body, &delivery, &WhatsAppConfig::default()),
        Provider::Twilio => twilio::decode(body, &delivery, &TwilioSmsConfig::default()),
    }
}

fn decode(provider: Provider, body: &[u8]) -> Vec<NormalizedUpdate> {
    decode_with(provider, body, None).unwrap_or_else(|e| panic!("decode failed: {e}"))
}

fn decode_fixture(provider: Provider, name: &str) -> Vec<NormalizedUpdate> {
    decode_with(provider, &fixture(name), None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decode_value(provider: Provider, value: &Value) -> Vec<NormalizedUpdate> {
    decode(provider, value.to_string().as_bytes())
}

/// The single update a payload must decode to.
fn single(updates: Vec<NormalizedUpdate>) -> NormalizedUpdate {
    assert_eq!(updates.len(), 1, "expected exactly one update, got {updates:#?}");
    updates.into_iter().next().unwrap()
}

fn message(update: &NormalizedUpdate) -> &NormalizedMessage {
    match &update.action {
        UpdateAction::Append(m) => m,
        other => panic!("expected an append, got {other:?}"),
    }
}

fn meta_str<'a>(m: &'a NormalizedMessage, key: &str) -> Option<&'a str> {
    m.metadata.get(key).and_then(Value::as_str)
}

fn refine_with(provider: Provider, update: &mut NormalizedUpdate, entry_point_id: &str, metadata: Value) {
    let Value::Object(metadata) = metadata else { panic!("metadata must be an object") };
    let info = EntryPointInfo { external_channel_id: entry_point_id, adapter_key: "test", metadata: &metadata };
    match provider {
        Provider::Slack => slack::refine(update, &info),
        Provider::Telegram => telegram::refine(update, &info),
        Provider::Twilio => twilio::refine(update, &info),
        Provider::WhatsApp => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------------

#[test]
fn slack_message_is_an_inbound_root_message() {
    let u = single(decode_fixture(Provider::Slack, "slack_message.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("C123ABC456"));
    assert!(u.fallback_channel_ids.is_empty());
    assert_eq!(u.thread.key.as_deref(), Some("C123ABC456:1355517523.000005"));
    assert!(u.thread.references.is_empty());
    let m = message(&u);
    assert_eq!(m.idempotency_key, "slack:C123ABC456:1355517523.000005");
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.sender.id.as_deref(), Some("U123ABC456"));
    assert_eq!(m.body, "Live long and prospect.");
    assert_eq!(m.occurred_at, time("2012-12-14T20:38:43.000005Z"));
    assert_eq!(meta_str(m, "teamId"), Some("T123ABC456"));
    assert_eq!(meta_str(m, "eventId"), Some("Ev123ABC456"));
    assert_eq!(meta_str(m, "channelType"), Some("channel"));
}

#[test]
fn slack_direct_message_capture() {
    let u = single(decode_fixture(Provider::Slack, "slack_message_im.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("D0442US94JD"));
    let m = message(&u);
    assert_eq!(m.idempotency_key, "slack:D0442US94JD:1664408649.009629");
    assert_eq!(m.direction, Direction::Inbound, "a person writing to the bot is a customer");
    assert_eq!(m.sender.id.as_deref(), Some("U043H11ES4V"));
    assert_eq!(m.body, "test");
    assert_eq!(meta_str(m, "channelType"), Some("im"));
    assert_eq!(meta_str(m, "clientMsgId"), Some("1efd76a1-5075-4c2c-ad38-1284820b429f"));
}

#[test]
fn slack_bot_reply_in_a_thread_is_outbound() {
    let u = single(decode_fixture(Provider::Slack, "slack_bot_message.json"));
    assert_eq!(u.thread.key.as_deref(), Some("C043YJGBY49:1664216109.798919"));
    assert_eq!(u.thread.references, vec!["slack:C043YJGBY49:1664216109.798919".to_string()]);
    let m = message(&u);
    assert_eq!(m.idempotency_key, "slack:C043YJGBY49:1664216870.477049");
    assert_eq!(m.direction, Direction::Outbound);
    assert_eq!(m.sender.id.as_deref(), Some("U0442US8QGH"));
    assert_eq!(m.sender.display_name.as_deref(), Some("Slacklinker dev"));
    assert_eq!(meta_str(m, "botId"), Some("B0439P161B9"));
    assert_eq!(meta_str(m, "threadTs"), Some("1664216109.798919"));
}

#[test]
fn slack_own_bot_user_from_authorizations_is_outbound_without_bot_id() {
    // The same capture without `bot_id`/`bot_profile`: the user is the app's bot user per
    // `authorizations[].is_bot`, so the message is still ours.
    let mut value = fixture_json("slack_bot_message.json");
    let event = value["event"].as_object_mut().unwrap();
    event.remove("bot_id");
    event.remove("bot_profile");
    assert_eq!(message(&single(decode_value(Provider::Slack, &value))).direction, Direction::Outbound);
    // ... and a human in the same workspace is not.
    value["event"]["user"] = json!("U043H11ES4V");
    assert_eq!(message(&single(decode_value(Provider::Slack, &value))).direction, Direction::Inbound);
    // A non-bot authorization (a user-token install) does not make its user "ours".
    value["event"]["user"] = json!("U0442US8QGH");
    value["authorizations"][0]["is_bot"] = json!(false);
    assert_eq!(message(&single(decode_value(Provider::Slack, &value))).direction, Direction::Inbound);
    // A malformed hint is ignored, not a reason to refuse the event.
    value["authorizations"] = json!("not a list");
    assert_eq!(message(&single(decode_value(Provider::Slack, &value))).direction, Direction::Inbound);
}

#[test]
fn slack_other_apps_bot_message_is_outbound() {
    let u = single(decode_fixture(Provider::Slack, "slack_bot_message_other_app.json"));
    let m = message(&u);
    assert_eq!(m.direction, Direction::Outbound);
    assert_eq!(m.sender.id.as_deref(), Some("B07JWPS5Y5S"));
    assert_eq!(m.sender.display_name.as_deref(), Some("Reacji Channeler"));
    assert_eq!(meta_str(m, "subtype"), Some("bot_message"));
}

#[test]
fn slack_file_share_carries_attachment_metadata() {
    let u = single(decode_fixture(Provider::Slack, "slack_file_share.json"));
    let m = message(&u);
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.body, "message message message");
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(a.filename.as_deref(), Some("namenamename.txt"));
    assert_eq!(a.content_type.as_deref(), Some("text/plain"));
    assert_eq!(a.size, Some(12));
    assert_eq!(a.content_id.as_deref(), Some("F04EEHX1EES"));
    assert_eq!(a.url.as_deref(), Some("https://files.slack.com/files-pri/T043DB835ML-F04EEHX1EES/namenamename.txt"));
    assert!(a.content.is_none());
}

#[test]
fn slack_thread_broadcast_joins_its_thread() {
    let u = single(decode_fixture(Provider::Slack, "slack_thread_broadcast.json"));
    assert_eq!(u.thread.key.as_deref(), Some("C123ABC456:1673464730.703009"));
    assert_eq!(u.thread.references, vec!["slack:C123ABC456:1673464730.703009".to_string()]);
    let m = message(&u);
    assert_eq!(m.idempotency_key, "slack:C123ABC456:1673464745.620769");
    assert_eq!(m.body, "broadcasting this reply");
    assert_eq!(m.direction, Direction::Inbound);
}

#[test]
fn slack_message_changed_edits_the_original() {
    let u = single(decode_fixture(Provider::Slack, "slack_message_changed.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("C123ABC456"));
    assert_eq!(u.thread.key.as_deref(), Some("C123ABC456:1355517523.000005"));
    assert_eq!(
        u.action,
        UpdateAction::Edit {
            idempotency_key: "slack:C123ABC456:1355517523.000005".into(),
            body: "Hello, world!".into(),
            edited_at: time("2013-01-22T18:19:15.000001Z"),
        }
    );
}

#[test]
fn slack_unfurl_without_text_change_is_ignored() {
    assert!(decode_fixture(Provider::Slack, "slack_message_changed_unfurl.json").is_empty());
}

#[test]
fn slack_message_deleted_deletes() {
    let u = single(decode_fixture(Provider::Slack, "slack_message_deleted.json"));
    assert_eq!(
        u.action,
        UpdateAction::Delete {
            idempotency_key: "slack:C123ABC456:1358878749.000002".into(),
            deleted_at: time("2013-01-22T18:19:15.000001Z"),
        }
    );
    let u = single(decode_fixture(Provider::Slack, "slack_message_deleted_capture.json"));
    assert_eq!(u.thread.key.as_deref(), Some("C043YJGBY49:1663966382.046509"));
    assert_eq!(
        u.action,
        UpdateAction::Delete {
            idempotency_key: "slack:C043YJGBY49:1663966382.046509".into(),
            deleted_at: time("2022-09-23T21:43:03.001500Z"),
        }
    );
}

#[test]
fn slack_ignored_events_decode_to_nothing() {
    for name in ["slack_url_verification.json", "slack_reaction_added.json", "slack_message_replied.json"] {
        assert!(decode_fixture(Provider::Slack, name).is_empty(), "{name}");
    }
    // Slack documents that `message_replied` arrives *without* its subtype over the Events API.
    let mut replied = fixture_json("slack_message_replied.json");
    replied["event"].as_object_mut().unwrap().remove("subtype");
    assert!(decode_value(Provider::Slack, &replied).is_empty());
    // Other hidden subtypes and non-message events too.
    let mut joined = fixture_json("slack_message.json");
    joined["event"]["subtype"] = json!("channel_join");
    assert!(decode_value(Provider::Slack, &joined).is_empty());
    let mut mention = fixture_json("slack_message.json");
    mention["event"]["type"] = json!("app_mention");
    assert!(decode_value(Provider::Slack, &mention).is_empty());
}

#[test]
fn slack_user_profile_becomes_the_sender_profile() {
    // Constructed: `user_profile` as Slack attaches it to some message events (shape per the
    // Events API docs); no public capture with one was found, see ORIGINS.md.
    let mut value = fixture_json("slack_message.json");
    value["event"]["user_profile"] = json!({
        "avatar_hash": "g1a2b3c4d5e6", "image_72": "https://avatars.example/u_72.png",
        "first_name": "Ada", "real_name": "Ada Lovelace", "display_name": "", "name": "ada"
    });
    let u = single(decode_value(Provider::Slack, &value));
    let s = &message(&u).sender;
    assert_eq!(s.display_name.as_deref(), Some("Ada Lovelace"), "an empty display_name falls back to real_name");
    assert_eq!(s.profile_image_url.as_deref(), Some("https://avatars.example/u_72.png"));
}

#[test]
fn slack_envelope_entry_point_is_a_fallback() {
    let updates = decode_with(Provider::Slack, &fixture("slack_message_im.json"), Some("A0442TUPHGR")).unwrap();
    let u = single(updates);
    assert_eq!(u.channel_id_candidates(Some("A0442TUPHGR")), vec!["D0442US94JD", "A0442TUPHGR"]);
    // No duplicate when the envelope names the same channel.
    let updates = decode_with(Provider::Slack, &fixture("slack_message_im.json"), Some("D0442US94JD")).unwrap();
    assert!(single(updates).fallback_channel_ids.is_empty());
}

#[test]
fn slack_refine_marks_the_entry_points_bot_users_outbound() {
    let base = single(decode_fixture(Provider::Slack, "slack_message_im.json"));
    for metadata in [json!({"botUserId": "U043H11ES4V"}), json!({"botUserId": ["UOTHER", "U043H11ES4V"]})] {
        let mut u = base.clone();
        refine_with(Provider::Slack, &mut u, "D0442US94JD", metadata.clone());
        assert_eq!(message(&u).direction, Direction::Outbound, "{metadata}");
    }
    for metadata in [
        json!({}),
        json!({"botUserId": "UOTHER"}),
        json!({"botUserId": [1, null, {"id": "U043H11ES4V"}]}),
        json!({"botUserId": {"id": "U043H11ES4V"}}),
        json!({"botUserId": ""}),
    ] {
        let mut u = base.clone();
        refine_with(Provider::Slack, &mut u, "D0442US94JD", metadata.clone());
        assert_eq!(u, base, "{metadata}");
    }
    // Edits and deletions are left alone.
    let edit = single(decode_fixture(Provider::Slack, "slack_message_changed.json"));
    let mut refined = edit.clone();
    refine_with(Provider::Slack, &mut refined, "C123ABC456", json!({"botUserId": "U123ABC456"}));
    assert_eq!(refined, edit);
}

#[test]
fn slack_config_bot_user_id_still_works() {
    let body = fixture("slack_message_im.json");
    let headers = Headers::new();
    let delivery =
        Delivery { body: &body, headers: &headers, external_channel_id: None, received_at: time(RECEIVED_AT) };
    let config = SlackConfig { bot_user_id: Some("U043H11ES4V".into()) };
    let u = single(slack::decode(&body, &delivery, &config).unwrap());
    assert_eq!(message(&u).direction, Direction::Outbound);
}

/// The scenario from the issue, at adapter level: a Slack thread of three messages, one of them
/// later edited and one from our bot, must decode to updates the runtime folds into a single
/// conversation (same entry point candidates, same thread key) with two inbound appends, one
/// outbound append and an edit of the right message.
#[test]
fn slack_thread_of_three_messages_folds_into_one_conversation() {
    // Shapes as in the fixtures (docs message.channels example, slack-web captures).
    let envelope = |event: Value| {
        json!({
            "token": "XXYYZZ", "team_id": "T123ABC456", "api_app_id": "A123ABC456", "type": "event_callback",
            "event_id": "Ev123ABC456", "event_time": 1355517523, "event": event,
            "authorizations": [{"team_id": "T123ABC456", "user_id": "UBOT00001", "is_bot": true,
                                "is_enterprise_install": false}]
        })
    };
    let root = envelope(json!({"type": "message", "channel": "C123ABC456", "user": "U123ABC456",
        "text": "My order never arrived", "ts": "1355517523.000005", "channel_type": "channel"}));
    let customer_reply = envelope(json!({"type": "message", "channel": "C123ABC456", "user": "U123ABC456",
        "text": "Order 42, placed last week", "ts": "1355517600.000100", "thread_ts": "1355517523.000005",
        "parent_user_id": "U123ABC456", "channel_type": "channel"}));
    let bot_reply = envelope(json!({"type": "message", "channel": "C123ABC456", "user": "UBOT00001",
        "bot_id": "B123ABC456", "text": "Thanks, an agent will look into it", "ts": "1355517660.000200",
        "thread_ts": "1355517523.000005", "parent_user_id": "U123ABC456", "channel_type": "channel"}));
    let edit = envelope(json!({"type": "message", "subtype": "message_changed", "hidden": true,
        "channel": "C123ABC456", "ts": "1355517700.000300", "channel_type": "channel",
        "message": {"type": "message", "user": "U123ABC456", "text": "Order 42, placed on Monday",
                    "ts": "1355517600.000100", "thread_ts": "1355517523.000005",
                    "edited": {"user": "U123ABC456", "ts": "1355517700.000000"}},
        "previous_message": {"type": "message", "user": "U123ABC456", "text": "Order 42, placed last week",
                             "ts": "1355517600.000100", "thread_ts": "1355517523.000005"}}));

    let entry_point_metadata = json!({"botUserId": "UBOT00001"});
    let mut updates = Vec::new();
    for payload in [&root, &customer_reply, &bot_reply, &edit] {
        for mut update in decode_value(Provider::Slack, payload) {
            // What the worker does after resolving the entry point.
            refine_with(Provider::Slack, &mut update, "C123ABC456", entry_point_metadata.clone());
            updates.push(update);
        }
    }
    assert_eq!(updates.len(), 4);

    // One conversation: every update resolves through the same candidates and thread key.
    for u in &updates {
        assert_eq!(u.channel_id_candidates(None), vec!["C123ABC456"]);
        assert_eq!(u.thread.key.as_deref(), Some("C123ABC456:1355517523.000005"));
    }
    // Replies (and the edit) also reference the root, the runtime's other way to find it.
    for u in &updates[1..] {
        assert_eq!(u.thread.references, vec!["slack:C123ABC456:1355517523.000005".to_string()]);
    }

    let appends: Vec<&NormalizedMessage> = updates
        .iter()
        .filter_map(|u| match &u.action {
            UpdateAction::Append(m) => Some(m),
            _ => None,
        })
        .collect();
    let inbound: Vec<_> = appends.iter().filter(|m| m.direction == Direction::Inbound).collect();
    let outbound: Vec<_> = appends.iter().filter(|m| m.direction == Direction::Outbound).collect();
    assert_eq!(inbound.len(), 2);
    assert_eq!(outbound.len(), 1);
    assert_eq!(outbound[0].idempotency_key, "slack:C123ABC456:1355517660.000200");
    let keys: Vec<&str> = appends.iter().map(|m| m.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), keys.iter().collect::<std::collections::HashSet<_>>().len(), "keys are distinct");

    let UpdateAction::Edit { idempotency_key, body, edited_at } = &updates[3].action else {
        panic!("the last update must be an edit: {:?}", updates[3].action)
    };
    assert_eq!(idempotency_key, &appends[1].idempotency_key, "the edit targets the customer's reply");
    assert_eq!(body, "Order 42, placed on Monday");
    assert_eq!(*edited_at, time("2012-12-14T20:41:40Z"));

    // The bot's reply is outbound through `refine` alone too, when Slack leaves out `bot_id`.
    let mut without_bot_id = bot_reply.clone();
    let event = without_bot_id["event"].as_object_mut().unwrap();
    event.remove("bot_id");
    without_bot_id["authorizations"] = json!([]);
    let mut u = single(decode_value(Provider::Slack, &without_bot_id));
    assert_eq!(message(&u).direction, Direction::Inbound);
    refine_with(Provider::Slack, &mut u, "C123ABC456", entry_point_metadata);
    assert_eq!(message(&u).direction, Direction::Outbound);
}

#[test]
fn slack_errors_name_the_field() {
    let err = decode_with(Provider::Slack, br#"{"type":"event_callback"}"#, None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("event".into()));
    let mut value = fixture_json("slack_message.json");
    value["event"].as_object_mut().unwrap().remove("ts");
    let err = decode_with(Provider::Slack, value.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("event.ts".into()));
    value["event"]["ts"] = json!("yesterday");
    let err = decode_with(Provider::Slack, value.to_string().as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("event.ts `yesterday`"), "{err}");
    value["event"]["ts"] = json!(1355517523);
    let err = decode_with(Provider::Slack, value.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err.reason_code(), "malformed_payload");
    let mut edit = fixture_json("slack_message_changed.json");
    edit["event"]["message"].as_object_mut().unwrap().remove("ts");
    let err = decode_with(Provider::Slack, edit.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("event.message.ts".into()));
}

// ---------------------------------------------------------------------------------------------
// Telegram
// ---------------------------------------------------------------------------------------------

#[test]
fn telegram_text_message() {
    let u = single(decode_fixture(Provider::Telegram, "telegram_message.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("1111111"));
    assert_eq!(u.thread.key.as_deref(), Some("1111111"));
    assert!(u.thread.references.is_empty());
    let m = message(&u);
    assert_eq!(m.idempotency_key, "telegram:1111111:1365");
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.sender.id.as_deref(), Some("1111111"));
    assert_eq!(m.sender.display_name.as_deref(), Some("Test Firstname Test Lastname"));
    assert_eq!(m.body, "/start");
    assert_eq!(m.occurred_at, time("2015-09-07T17:05:32Z"));
    assert_eq!(meta_str(m, "username"), Some("Testusername"));
    assert_eq!(meta_str(m, "chatType"), Some("private"));
    assert_eq!(m.metadata.get("updateId"), Some(&json!(10000)));
}

#[test]
fn telegram_edited_message_edits() {
    let u = single(decode_fixture(Provider::Telegram, "telegram_edited_message.json"));
    assert_eq!(u.thread.key.as_deref(), Some("1111111"));
    assert_eq!(
        u.action,
        UpdateAction::Edit {
            idempotency_key: "telegram:1111111:1365".into(),
            body: "Edited text".into(),
            edited_at: time("2015-09-07T17:23:20Z"),
        }
    );
}

#[test]
fn telegram_reply_references_the_replied_message() {
    let u = single(decode_fixture(Provider::Telegram, "telegram_reply.json"));
    assert_eq!(u.thread.references, vec!["telegram:1111112:1334".to_string()]);
}

#[test]
fn telegram_files_become_attachments() {
    let cases = [
        ("telegram_document.json", Some("Testfile.pdf"), "application/pdf", 536392),
        ("telegram_voice.json", None, "audio/ogg", 23000),
        ("telegram_audio.json", None, "audio/mpeg", 3897500),
    ];
    for (name, filename, content_type, size) in cases {
        let u = single(decode_fixture(Provider::Telegram, name));
        let m = message(&u);
        assert_eq!(m.body, "", "{name}");
        assert_eq!(m.attachments.len(), 1, "{name}");
        let a = &m.attachments[0];
        assert_eq!(a.filename.as_deref(), filename, "{name}");
        assert_eq!(a.content_type.as_deref(), Some(content_type), "{name}");
        assert_eq!(a.size, Some(size), "{name}");
        assert_eq!(a.content_id.as_deref(), Some("AwADBAADbXXXXXXXXXXXGBdhD2l6_XX"), "{name}");
    }
}

#[test]
fn telegram_photo_keeps_the_largest_size() {
    let u = single(decode_fixture(Provider::Telegram, "telegram_photo.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("1234567"));
    let m = message(&u);
    assert_eq!(m.idempotency_key, "telegram:1234567:1234");
    assert_eq!(m.sender.display_name.as_deref(), Some("Telegram_Bots"), "a null last_name is skipped");
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.attachments.len(), 1);
    let a = &m.attachments[0];
    assert_eq!(a.content_id.as_deref(), Some("AgADAgADvKgxGxW80EtRgjrTaWNmy7UerQ4ABP6uRLtwe8Z8wZ4BAAEC"));
    assert_eq!(a.size, Some(489108));
    assert_eq!(a.content_type.as_deref(), Some("image/jpeg"));
    assert!(m.metadata.get("languageCode").is_none(), "null language_code");
}

#[test]
fn telegram_ignored_updates_decode_to_nothing() {
    for name in ["telegram_callback_query.json", "telegram_inline_query.json"] {
        assert!(decode_fixture(Provider::Telegram, name).is_empty(), "{name}");
    }
    // A service message (someone joined) has no content of its own.
    let mut joined = fixture_json("telegram_message.json");
    let message = joined["message"].as_object_mut().unwrap();
    message.remove("text");
    message.insert("new_chat_members".into(), json!([{"id": 2, "is_bot": false, "first_name": "B"}]));
    assert!(decode_value(Provider::Telegram, &joined).is_empty());
    // A live-location edit changes no text: no edit that would blank the stored body.
    let mut live = fixture_json("telegram_edited_message.json");
    live["edited_message"].as_object_mut().unwrap().remove("text");
    assert!(decode_value(Provider::Telegram, &live).is_empty());
}

#[test]
fn telegram_locations_contacts_and_stickers_are_shown() {
    let mut value = fixture_json("telegram_message.json");
    let m = value["message"].as_object_mut().unwrap();
    m.remove("text");
    m.insert("location".into(), json!({"latitude": 52.5, "longitude": 13.25}));
    assert_eq!(message(&single(decode_value(Provider::Telegram, &value))).body, "Location: (52.5, 13.25)");
    let m = value["message"].as_object_mut().unwrap();
    m.remove("location");
    m.insert("contact".into(), json!({"phone_number": "+4930123", "first_name": "Ada"}));
    assert_eq!(message(&single(decode_value(Provider::Telegram, &value))).body, "Contact: Ada +4930123");
    let m = value["message"].as_object_mut().unwrap();
    m.remove("contact");
    m.insert(
        "sticker".into(),
        json!({"file_id": "CAACAgIAAxk", "file_unique_id": "x", "type": "regular",
        "width": 512, "height": 512, "is_animated": false, "is_video": false, "emoji": "👍"}),
    );
    let u = single(decode_value(Provider::Telegram, &value));
    let m = message(&u);
    assert_eq!(m.body, "👍");
    assert_eq!(m.attachments[0].content_type.as_deref(), Some("image/webp"));
    assert!(m.attachments[0].inline);
}

#[test]
fn telegram_bot_senders_are_outbound() {
    let mut value = fixture_json("telegram_message.json");
    value["message"]["from"]["is_bot"] = json!(true);
    assert_eq!(message(&single(decode_value(Provider::Telegram, &value))).direction, Direction::Outbound);
}

#[test]
fn telegram_refine_uses_bot_id_and_username() {
    let base = single(decode_fixture(Provider::Telegram, "telegram_message.json"));
    for metadata in [
        json!({"botId": 1111111}),
        json!({"botId": "1111111"}),
        json!({"botId": [5, 1111111]}),
        json!({"botUsername": "@testUSERNAME"}),
        json!({"botUsername": "Testusername"}),
    ] {
        let mut u = base.clone();
        refine_with(Provider::Telegram, &mut u, "1111111", metadata.clone());
        assert_eq!(message(&u).direction, Direction::Outbound, "{metadata}");
    }
    for metadata in [json!({}), json!({"botId": 5}), json!({"botUsername": "other_bot"}), json!({"botId": true})] {
        let mut u = base.clone();
        refine_with(Provider::Telegram, &mut u, "1111111", metadata.clone());
        assert_eq!(u, base, "{metadata}");
    }
}

#[test]
fn telegram_envelope_entry_point_is_a_fallback() {
    let u = single(decode_with(Provider::Telegram, &fixture("telegram_message.json"), Some("bot:5000000001")).unwrap());
    assert_eq!(u.channel_id_candidates(Some("bot:5000000001")), vec!["1111111", "bot:5000000001"]);
}

#[test]
fn telegram_errors_name_the_field() {
    let mut value = fixture_json("telegram_message.json");
    value["message"].as_object_mut().unwrap().remove("message_id");
    let err = decode_with(Provider::Telegram, value.to_string().as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("message_id"), "{err}");
    let mut value = fixture_json("telegram_message.json");
    value["message"]["date"] = json!(99_999_999_999_999i64);
    let err = decode_with(Provider::Telegram, value.to_string().as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("message.date"), "{err}");
    value["message"]["date"] = json!(1e300);
    assert_eq!(
        decode_with(Provider::Telegram, value.to_string().as_bytes(), None).unwrap_err().reason_code(),
        "malformed_payload"
    );
}

// ---------------------------------------------------------------------------------------------
// WhatsApp
// ---------------------------------------------------------------------------------------------

#[test]
fn whatsapp_text_message() {
    let u = single(decode_fixture(Provider::WhatsApp, "whatsapp_text.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("106540352242922"));
    assert_eq!(u.thread.key.as_deref(), Some("16505551234"));
    let m = message(&u);
    assert_eq!(m.idempotency_key, "wa:wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=");
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.sender.id.as_deref(), Some("16505551234"));
    assert_eq!(m.sender.display_name.as_deref(), Some("Sheena Nelson"));
    assert_eq!(m.body, "Does it come in another color?");
    assert_eq!(m.occurred_at, time("2025-02-12T00:43:44Z"));
    assert_eq!(meta_str(m, "wabaId"), Some("102290129340398"));
    assert_eq!(meta_str(m, "displayPhoneNumber"), Some("15550783881"));
    assert_eq!(meta_str(m, "waType"), Some("text"));
}

#[test]
fn whatsapp_dashboard_test_payload() {
    let u = single(decode_fixture(Provider::WhatsApp, "whatsapp_dashboard_test.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("123456123"));
    let m = message(&u);
    assert_eq!(m.idempotency_key, "wa:ABGGFlA5Fpa");
    assert_eq!(m.sender.display_name.as_deref(), Some("test user name"));
    assert_eq!(m.body, "this is a text message");
}

#[test]
fn whatsapp_image_with_documented_hex_sha256() {
    let u = single(decode_fixture(Provider::WhatsApp, "whatsapp_image.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("27681414235104944"));
    let m = message(&u);
    assert_eq!(m.body, "This is a caption");
    assert_eq!(m.sender.display_name.as_deref(), Some("Kerry Fisher"));
    let a = &m.attachments[0];
    assert_eq!(a.content_id.as_deref(), Some("2754859441498128"));
    assert_eq!(a.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(a.sha256.as_deref(), Some("81d3bd8a8db4868c9520ed47186e8b7c5789e61ff79f7f834be6950b808a90d3"));
}

#[test]
fn whatsapp_interactive_replies() {
    let u = single(decode_fixture(Provider::WhatsApp, "whatsapp_interactive.json"));
    assert_eq!(
        u.thread.references,
        vec!["wa:wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA=".to_string()]
    );
    let m = message(&u);
    assert_eq!(m.body, "Cancel");
    assert_eq!(meta_str(m, "replyId"), Some("cancel-button"));
    assert_eq!(meta_str(m, "interactiveType"), Some("button_reply"));
    let u = single(decode_fixture(Provider::WhatsApp, "whatsapp_interactive_list.json"));
    let m = message(&u);
    assert_eq!(m.body, "Priority Mail Express");
    assert_eq!(meta_str(m, "replyId"), Some("priority_express"));
    assert_eq!(meta_str(m, "replyDescription"), Some("Next Day to 2 Days"));
}

#[test]
fn whatsapp_business_app_echo_is_outbound() {
    let u = single(decode_fixture(Provider::WhatsApp, "whatsapp_echo.json"));
    assert_eq!(u.external_channel_id.as_deref(), Some("106540352242922"));
    assert_eq!(u.thread.key.as_deref(), Some("16505551234"), "the customer's thread");
    let m = message(&u);
    assert_eq!(m.direction, Direction::Outbound);
    assert_eq!(m.sender.id.as_deref(), Some("15550783881"));
    assert_eq!(m.body, "Here's the info you requested! https://www.meta.com/quest/quest-3/");
    assert_eq!(m.metadata.get("echo"), Some(&json!(true)));
    assert_eq!(m.occurred_at, time("2025-02-12T00:43:44Z"), "a numeric timestamp is accepted");
}

#[test]
fn whatsapp_message_from_our_own_number_is_outbound() {
    let mut value = fixture_json("whatsapp_text.json");
    value["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = json!("+1 555-078-3881");
    let u = single(decode_value(Provider::WhatsApp, &value));
    assert_eq!(message(&u).direction, Direction::Outbound);
    assert_eq!(message(&u).sender.display_name, None, "the customer's profile is not ours");
}

#[test]
fn whatsapp_account_level_errors_and_other_fields_decode_to_nothing() {
    assert!(decode_fixture(Provider::WhatsApp, "whatsapp_errors.json").is_empty());
    let mut other = fixture_json("whatsapp_text.json");
    other["entry"][0]["changes"][0]["field"] = json!("account_update");
    assert!(decode_value(Provider::WhatsApp, &other).is_empty());
}

#[test]
fn whatsapp_pywa_message_corpus() {
    let corpus = fixture_json("whatsapp_pywa_messages.json");
    let by_name = |name: &str| decode_value(Provider::WhatsApp, &corpus[name]);
    // Every entry decodes; reactions decode to nothing.
    for (name, payload) in corpus.as_object().unwrap() {
        let updates = decode_value(Provider::WhatsApp, payload);
        let expected = usize::from(!name.contains("reaction"));
        assert_eq!(updates.len(), expected, "{name}: {updates:#?}");
        if let Some(u) = updates.first() {
            assert_eq!(u.external_channel_id.as_deref(), Some("1122334455667"), "{name}");
            assert_eq!(u.thread.key.as_deref(), Some("972987654321"), "{name}");
            assert_eq!(message(u).sender.display_name.as_deref(), Some("Test Name"), "{name}");
            assert_eq!(message(u).direction, Direction::Inbound, "{name}");
        }
    }
    let body = |name: &str| message(&single(by_name(name))).body.clone();
    assert_eq!(body("text"), "Body Text");
    assert_eq!(body("current_location"), "Location: (12.25089, 43.90539)");
    assert_eq!(
        body("chosen_location"),
        "Location: Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 (37.4611978, -122.2164385)"
    );
    assert_eq!(
        body("contacts"),
        "Contacts: Chandler Bing (+1 555-555-5555); Monica (+1 666-666-6666); Rachel Green (+1 777-777-7777)"
    );
    assert_eq!(body("order"), "[WhatsApp message of type `order`]");
    assert_eq!(body("unsupported"), "[WhatsApp message of type `unsupported`: Message type unknown]");
    // Meta could not render the interactive reply: a placeholder with the value-level error,
    // not a dead letter.
    assert_eq!(body("interactive_message_with_err"), "[WhatsApp message of type `interactive`: Something went wrong]");
    assert_eq!(body("referral"), "BODY");

    let reply = single(by_name("reply"));
    assert_eq!(reply.thread.references, vec!["wa:wamid.xyzxyz==".to_string()]);
    for name in ["forwarded", "forwarded_many_times", "video"] {
        assert_eq!(message(&single(by_name(name))).metadata.get("forwarded"), Some(&json!(true)), "{name}");
    }

    let document = single(by_name("document"));
    let m = message(&document);
    assert_eq!(m.body, "caption");
    assert_eq!(m.attachments[0].filename.as_deref(), Some("filename.pdf"));
    assert_eq!(m.attachments[0].content_type.as_deref(), Some("application/pdf"));
    // Real webhooks send base64; stored as hex. pywa's anonymised values that are not 32 bytes
    // are dropped rather than stored as a wrong hash.
    let voice = single(by_name("voice"));
    assert_eq!(
        message(&voice).attachments[0].sha256.as_deref(),
        Some("9b4e2915fd8445d6a8a53c859063c0d3e6d7de2f986367588151703a00cb4832")
    );
    assert_eq!(message(&single(by_name("image"))).attachments[0].sha256, None);
    let sticker = single(by_name("static_sticker"));
    assert!(message(&sticker).attachments[0].inline);
    assert_eq!(message(&sticker).attachments[0].content_type.as_deref(), Some("image/webp"));
}

#[test]
fn whatsapp_statuses_update_delivery() {
    let corpus = fixture_json("whatsapp_pywa_statuses.json");
    let expected = [
        ("sent", "sent", "2023-10-25T20:49:05Z", None),
        ("delivered", "delivered", "2023-10-25T20:49:05Z", None),
        ("read", "read", "2023-07-15T00:20:58Z", None),
        ("failed", "failed", "2023-07-15T00:20:58Z", Some("130472: User's number is part of an experiment")),
        ("with_tracker", "sent", "2023-10-25T20:49:05Z", None),
    ];
    for (name, status, at, detail) in expected {
        let u = single(decode_value(Provider::WhatsApp, &corpus[name]));
        assert_eq!(u.external_channel_id.as_deref(), Some("1122334455667"), "{name}");
        assert_eq!(u.thread.key.as_deref(), Some("972987654321"), "{name}");
        assert_eq!(
            u.action,
            UpdateAction::Status {
                idempotency_key: "wa:wamid.xyzxyz".into(),
                status: status.into(),
                at: time(at),
                detail: detail.map(str::to_owned),
            },
            "{name}"
        );
    }
}

#[test]
fn whatsapp_edits_and_revokes() {
    let corpus = fixture_json("whatsapp_pywa_edited.json");
    for (name, body) in [("edit_text", "Text was edited"), ("edit_caption", "caption")] {
        let u = single(decode_value(Provider::WhatsApp, &corpus[name]));
        assert_eq!(
            u.action,
            UpdateAction::Edit {
                idempotency_key: "wa:wamid.zzzzzz".into(),
                body: body.into(),
                edited_at: time("2023-10-11T17:22:48Z"),
            },
            "{name}"
        );
    }
    let corpus = fixture_json("whatsapp_pywa_deleted.json");
    let u = single(decode_value(Provider::WhatsApp, &corpus["revoke"]));
    assert_eq!(u.external_channel_id.as_deref(), Some("<BUSINESS_PHONE_NUMBER_ID>"));
    assert_eq!(
        u.action,
        UpdateAction::Delete {
            idempotency_key: "wa:<ORIGINAL_WHATSAPP_MESSAGE_ID>".into(),
            deleted_at: time("2023-10-11T16:53:43Z"),
        }
    );
}

#[test]
fn whatsapp_errors_name_the_field() {
    let err = decode_with(Provider::WhatsApp, br#"{"object":"page","entry":[]}"#, None).unwrap_err();
    assert_eq!(err.reason_code(), "unsupported_event");
    let mut value = fixture_json("whatsapp_text.json");
    value["entry"][0]["changes"][0]["value"]["metadata"].as_object_mut().unwrap().remove("phone_number_id");
    let err = decode_with(Provider::WhatsApp, value.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("entry[0].changes[0].value.metadata.phone_number_id".into()));
    let mut value = fixture_json("whatsapp_text.json");
    value["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!("soon");
    let err = decode_with(Provider::WhatsApp, value.to_string().as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("entry[0].changes[0].value.messages[0].timestamp"), "{err}");
    let mut value = fixture_json("whatsapp_text.json");
    value["entry"][0]["changes"][0]["value"]["messages"][0].as_object_mut().unwrap().remove("from");
    let err = decode_with(Provider::WhatsApp, value.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("entry[0].changes[0].value.messages[0].from".into()));
    let mut edit = fixture_json("whatsapp_pywa_edited.json")["edit_text"].clone();
    edit["entry"][0]["changes"][0]["value"]["messages"][0]["edit"]
        .as_object_mut()
        .unwrap()
        .remove("original_message_id");
    let err = decode_with(Provider::WhatsApp, edit.to_string().as_bytes(), None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("entry[0].changes[0].value.messages[0].edit.original_message_id".into()));
}

#[test]
fn whatsapp_envelope_entry_point_is_a_fallback() {
    let u = single(decode_with(Provider::WhatsApp, &fixture("whatsapp_text.json"), Some("102290129340398")).unwrap());
    assert_eq!(u.channel_id_candidates(Some("102290129340398")), vec!["106540352242922", "102290129340398"]);
}

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

#[test]
fn twilio_legacy_sms() {
    let u = single(decode_fixture(Provider::Twilio, "twilio_sms_legacy.form"));
    assert_eq!(u.external_channel_id.as_deref(), Some("+14158141819"));
    assert_eq!(u.thread.key.as_deref(), Some("+14159354345"));
    let m = message(&u);
    assert_eq!(m.idempotency_key, "twilio:SM2003cbd5e6a3701999aa3e5f20ff2787");
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.sender.id.as_deref(), Some("+14159354345"));
    assert_eq!(m.body, "Orly");
    assert_eq!(m.occurred_at, time(RECEIVED_AT), "Twilio's webhook has no time of its own");
    assert_eq!(meta_str(m, "fromCity"), Some("SAN FRANCISCO"));
    assert_eq!(meta_str(m, "accountSid"), Some("ACba8bc05eacf94afdae398e642c9cc32d"));
}

#[test]
fn twilio_whatsapp_messages() {
    let u = single(decode_fixture(Provider::Twilio, "twilio_whatsapp_text.form"));
    assert_eq!(u.external_channel_id.as_deref(), Some("whatsapp:+14123456789"));
    assert_eq!(u.thread.key.as_deref(), Some("whatsapp:+31612345678"));
    assert_eq!(message(&u).idempotency_key, "twilio:SM892512e202b34d4109b10a3893fa9640");
    assert_eq!(message(&u).body, "test");

    let u = single(decode_fixture(Provider::Twilio, "twilio_whatsapp_image.form"));
    let m = message(&u);
    assert_eq!(m.body, "");
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(m.attachments[0].content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(
        m.attachments[0].url.as_deref(),
        Some("https://api.twilio.com/2010-04-01/Accounts/AC1a03647d811fab342c0ad608e382fab2/Messages/MM21151abfaadc1fb79b782f8460862a52/Media/ME5f0afa2336bd0f73ca553fb5a2e3150bc")
    );

    let u = single(decode_fixture(Provider::Twilio, "twilio_whatsapp_location.form"));
    assert_eq!(
        message(&u).body,
        "Location: Microsoft, Evert van de Beekstraat 354, Schiphol, North Holland 1118 CZ (52.303897857666016, 4.750025749206543)"
    );
}

#[test]
fn twilio_status_callbacks() {
    for (name, sid, status) in [
        ("twilio_status_delivered.form", "SMdf55df64a2ff4920bb0748193cfbb640", "delivered"),
        ("twilio_status_sent.form", "SM0cec4ed334e74bcbb64eb8b6684e9654", "sent"),
    ] {
        let u = single(decode_fixture(Provider::Twilio, name));
        assert_eq!(u.external_channel_id.as_deref(), Some("whatsapp:+14123456789"), "{name}: our number");
        assert_eq!(u.thread.key.as_deref(), Some("whatsapp:+31612345678"), "{name}: the customer");
        assert_eq!(
            u.action,
            UpdateAction::Status {
                idempotency_key: format!("twilio:{sid}"),
                status: status.into(),
                at: time(RECEIVED_AT),
                detail: None,
            }
        );
    }
    let failed = "MessageSid=SM1&MessageStatus=undelivered&From=%2B1555&To=%2B1666&ErrorCode=30003";
    let u = single(decode(Provider::Twilio, failed.as_bytes()));
    let UpdateAction::Status { detail, .. } = &u.action else { panic!() };
    assert_eq!(detail.as_deref(), Some("error 30003"));
}

#[test]
fn twilio_refine_recognises_our_own_numbers() {
    // A message that went out from one of our numbers, mirrored by the publisher: `To` (the
    // customer) is not an entry point, `From` (a fallback candidate) is.
    let body = "MessageSid=SM9&From=whatsapp%3A%2B14123456789&To=whatsapp%3A%2B31612345678&Body=Hi+there";
    let base = single(decode(Provider::Twilio, body.as_bytes()));
    assert_eq!(base.channel_id_candidates(None), vec!["whatsapp:+31612345678", "whatsapp:+14123456789"]);
    let mut u = base.clone();
    refine_with(Provider::Twilio, &mut u, "whatsapp:+14123456789", json!({}));
    assert_eq!(message(&u).direction, Direction::Outbound);
    assert_eq!(u.thread.key.as_deref(), Some("whatsapp:+31612345678"), "moved to the customer's thread");
    let mut u = base.clone();
    refine_with(Provider::Twilio, &mut u, "MG-service", json!({"ownNumbers": ["whatsapp:+14123456789"]}));
    assert_eq!(message(&u).direction, Direction::Outbound);
    // An ordinary inbound message stays inbound.
    let inbound = single(decode_fixture(Provider::Twilio, "twilio_whatsapp_text.form"));
    let mut u = inbound.clone();
    refine_with(Provider::Twilio, &mut u, "whatsapp:+14123456789", json!({"ownNumbers": 42}));
    assert_eq!(u, inbound);
}

#[test]
fn twilio_form_edge_cases() {
    // Invalid UTF-8 decodes lossily instead of failing or panicking.
    let mut body = b"MessageSid=SM1&From=%2B1&To=%2B2&Body=caf".to_vec();
    body.extend_from_slice(&[0xC3, 0x28, b'%', b'F', b'F']);
    let u = single(decode(Provider::Twilio, &body));
    assert!(message(&u).body.starts_with("caf"), "{}", message(&u).body);
    let err = decode_with(Provider::Twilio, b"From=%2B1&To=%2B2", None).unwrap_err();
    assert_eq!(err, AdapterError::Missing("MessageSid".into()));
    let err = decode_with(Provider::Twilio, b"MessageSid=SM1&From=%2B1&To=%2B2&NumMedia=99999999999999999999999", None)
        .unwrap_err();
    assert!(err.to_string().contains("NumMedia"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// robustness: hostile input never panics
// ---------------------------------------------------------------------------------------------

const PROVIDERS: [Provider; 4] = [Provider::Slack, Provider::Telegram, Provider::WhatsApp, Provider::Twilio];

fn fixtures_of(provider: Provider) -> Vec<Vec<u8>> {
    let prefix = match provider {
        Provider::Slack => "slack_",
        Provider::Telegram => "telegram_",
        Provider::WhatsApp => "whatsapp_",
        Provider::Twilio => "twilio_",
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names.iter().map(|n| fixture(n)).collect()
}

#[test]
fn every_fixture_decodes_and_is_covered() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat");
    let origins = std::fs::read_to_string(dir.join("ORIGINS.md")).expect("ORIGINS.md");
    let mut count = 0;
    for provider in PROVIDERS {
        for body in fixtures_of(provider) {
            // pywa corpora are maps of webhooks; everything else is one delivery.
            let value: Option<Value> = serde_json::from_slice(&body).ok();
            match value
                .as_ref()
                .and_then(Value::as_object)
                .filter(|o| !o.contains_key("object") && !o.contains_key("type") && !o.contains_key("update_id"))
            {
                Some(corpus) => {
                    for payload in corpus.values() {
                        decode_value(provider, payload);
                    }
                }
                None => {
                    decode(provider, &body);
                }
            }
            count += 1;
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "ORIGINS.md" {
            assert!(origins.contains(&format!("`{name}`")), "{name} has no entry in ORIGINS.md");
        }
    }
    assert!(count >= 35, "only {count} fixtures found");
}

#[test]
fn deep_nesting_and_huge_numbers_are_errors_not_crashes() {
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    let deep_event =
        format!(r#"{{"type":"event_callback","event":{}1{}}}"#, r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
    let deep_wa = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"changes":[{{"field":"messages","value":{}1{}}}]}}]}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    );
    for provider in PROVIDERS {
        for body in [&deep_array, &deep_object, &deep_event, &deep_wa] {
            let _ = decode_with(provider, body.as_bytes(), None);
        }
    }
    let huge =
        r#"{"update_id":1e999,"message":{"message_id":123456789012345678901234567890,"date":1,"chat":{"id":1}}}"#;
    assert_eq!(decode_with(Provider::Telegram, huge.as_bytes(), None).unwrap_err().reason_code(), "malformed_payload");
    let mut wa = fixture_json("whatsapp_text.json");
    wa["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!(u64::MAX);
    assert!(decode_with(Provider::WhatsApp, wa.to_string().as_bytes(), None).is_err());
    let mut slack = fixture_json("slack_message.json");
    slack["event"]["ts"] = json!("99999999999999.999999");
    assert!(decode_with(Provider::Slack, slack.to_string().as_bytes(), None).is_err());
    let too_big = vec![b' '; intake_adapters::chat::MAX_BODY_BYTES + 1];
    for provider in PROVIDERS {
        assert_eq!(decode_with(provider, &too_big, None).unwrap_err().reason_code(), "payload_too_large");
    }
}

fn mutate(mut body: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, byte, op) in edits {
        if body.is_empty() {
            body.push(byte);
            continue;
        }
        let i = pos % body.len();
        match op % 4 {
            0 => body[i] = byte,
            1 => body.insert(i, byte),
            2 => {
                body.remove(i);
            }
            _ => body.truncate(i),
        }
    }
    body
}

fn check_no_panic(provider: Provider, body: &[u8]) {
    for envelope in [None, Some("envelope-id")] {
        if let Ok(updates) = decode_with(provider, body, envelope) {
            for mut update in updates {
                let metadata = json!({"botUserId": ["U1"], "botId": 1, "botUsername": "x", "ownNumbers": "+1"});
                refine_with(provider, &mut update, "x", metadata);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn slack_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_no_panic(Provider::Slack, &body);
    }

    #[test]
    fn telegram_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_no_panic(Provider::Telegram, &body);
    }

    #[test]
    fn whatsapp_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_no_panic(Provider::WhatsApp, &body);
    }

    #[test]
    fn twilio_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_no_panic(Provider::Twilio, &body);
    }

    #[test]
    fn slack_never_panics_on_mutated_fixtures(i in any::<usize>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let fixtures = fixtures_of(Provider::Slack);
        check_no_panic(Provider::Slack, &mutate(fixtures[i % fixtures.len()].clone(), &edits));
    }

    #[test]
    fn telegram_never_panics_on_mutated_fixtures(i in any::<usize>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let fixtures = fixtures_of(Provider::Telegram);
        check_no_panic(Provider::Telegram, &mutate(fixtures[i % fixtures.len()].clone(), &edits));
    }

    #[test]
    fn whatsapp_never_panics_on_mutated_fixtures(i in any::<usize>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let fixtures = fixtures_of(Provider::WhatsApp);
        check_no_panic(Provider::WhatsApp, &mutate(fixtures[i % fixtures.len()].clone(), &edits));
    }

    #[test]
    fn twilio_never_panics_on_mutated_fixtures(i in any::<usize>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let fixtures = fixtures_of(Provider::Twilio);
        check_no_panic(Provider::Twilio, &mutate(fixtures[i % fixtures.len()].clone(), &edits));
    }

    /// Structured mutations: any JSON value in place of any field of any JSON fixture.
    #[test]
    fn json_adapters_never_panic_on_replaced_fields(i in any::<usize>(), path_seed in any::<u64>(), replacement in arb_json()) {
        for provider in [Provider::Slack, Provider::Telegram, Provider::WhatsApp] {
            let fixtures = fixtures_of(provider);
            let Ok(mut value) = serde_json::from_slice::<Value>(&fixtures[i % fixtures.len()]) else { continue };
            replace_somewhere(&mut value, path_seed, replacement.clone());
            check_no_panic(provider, value.to_string().as_bytes());
        }
    }

    /// `refine` with arbitrary entry point metadata never panics.
    #[test]
    fn refine_never_panics_on_arbitrary_metadata(meta in proptest::collection::vec(("[a-zA-Z]{1,12}", arb_json()), 0..6), id in ".{0,20}") {
        let metadata: Map<String, Value> = meta.into_iter().collect();
        let metadata = Value::Object(metadata);
        for (provider, name) in [(Provider::Slack, "slack_message.json"), (Provider::Telegram, "telegram_message.json"),
                                 (Provider::Twilio, "twilio_whatsapp_text.form")] {
            let mut update = single(decode_fixture(provider, name));
            refine_with(provider, &mut update, &id, metadata.clone());
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        Just(json!("1355517523.000005")),
        Just(json!("")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{1,10}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Replace one node of `value`, chosen by walking down with `seed`.
fn replace_somewhere(value: &mut Value, mut seed: u64, replacement: Value) {
    let mut node = value;
    loop {
        let children = match node {
            Value::Object(map) => map.len(),
            Value::Array(items) => items.len(),
            _ => 0,
        };
        if children == 0 || seed.is_multiple_of(3) {
            *node = replacement;
            return;
        }
        let pick = (seed / 3) as usize % children;
        seed /= 7;
        node = match node {
            Value::Object(map) => map.values_mut().nth(pick).unwrap(),
            Value::Array(items) => &mut items[pick],
            _ => unreachable!(),
        };
    }
}
