//! Chat webhooks as the providers send them: Slack Events API `message` events (`chat.slack`),
//! WhatsApp Cloud API webhooks (`chat.whatsapp`) and Telegram Bot API updates
//! (`chat.telegram`). Each is one new message, so each stores exactly one row.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{handle, person, prose, BenchMessage, Kind, Rng};

/// Slack channels registered as entry points.
pub(in crate::bench) const SLACK_CHANNELS: usize = 4;
/// WhatsApp business numbers registered as entry points.
pub(in crate::bench) const WHATSAPP_NUMBERS: usize = 2;
/// The Telegram bot's entry point; chats are not registered, so updates resolve through the
/// `x-intake-external-channel-id` the publisher sets (the bot the webhook came in for).
pub(in crate::bench) const TELEGRAM_BOT: &str = "bench_support_bot";

const STREAM_SLACK: u64 = 0x51;
const STREAM_WHATSAPP: u64 = 0x52;
const STREAM_TELEGRAM: u64 = 0x53;
const TEAM: &str = "T0BENCH01";
const BOT_USER: &str = "U0BOTBENCH";

pub(in crate::bench) fn slack_channel(n: usize) -> String {
    format!("C0BENCH{n:02}")
}

/// The `phone_number_id` of WhatsApp business number `n`.
pub(in crate::bench) fn whatsapp_number_id(n: usize) -> String {
    format!("10654035224{n:04}")
}

fn slack_ts(run: usize, k: usize) -> String {
    format!("{}.{:06}", super::message_time(run, k), (k * 7919 + 13) % 1_000_000)
}

/// Slack message `k` of run `run`: threads of four in a channel (root, two customer replies and
/// a bot answer), some with a link or a mention.
pub(in crate::bench) fn slack(seed: u64, run: usize, k: usize) -> BenchMessage {
    let (t, pos) = (k / 4, k % 4);
    let mut rng = Rng::new(seed, STREAM_SLACK, k as u64);
    let mut who = Rng::new(seed, STREAM_SLACK, 1 << 40 | t as u64);
    let (first, last) = person(&mut who);
    let channel = slack_channel(t % SLACK_CHANNELS);
    let ts = slack_ts(run, k);
    let bot = pos == 2;
    let len = rng.range(40, 500);
    let mut text = prose(&mut rng, len, true);
    if rng.percent(20) {
        text.push_str(&format!(" <https://shop.example.com/orders/{}|order {}>", 100_000 + t, 100_000 + t));
    }
    if !bot && rng.percent(15) {
        text = format!("<@{BOT_USER}> {text}");
    }
    let blocks = json!([{
        "type": "rich_text",
        "block_id": rng.hex(5),
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }]);
    let mut event = if bot {
        json!({
            "type": "message", "subtype": "bot_message", "text": text, "ts": ts, "username": "Support bot",
            "bot_id": "B0BENCH01", "bot_profile": {"id": "B0BENCH01", "name": "Support bot", "app_id": "A0BENCH01", "team_id": TEAM},
            "blocks": blocks,
        })
    } else {
        let user = format!("U0{:08X}", t * 7 + 1);
        json!({
            "type": "message", "user": user, "text": text, "ts": ts, "team": TEAM, "blocks": blocks,
            "client_msg_id": format!("{}-{}-4{}-a{}-{}", rng.hex(8), rng.hex(4), rng.hex(3), rng.hex(3), rng.hex(12)),
            "user_profile": {
                "avatar_hash": rng.hex(12), "image_72": format!("https://avatars.slack-edge.com/2025-06-01/{}_72.png", rng.hex(20)),
                "first_name": first, "real_name": format!("{first} {last}"), "display_name": handle(first),
                "team": TEAM, "name": format!("{}.{}", handle(first), handle(last)), "is_restricted": false, "is_ultra_restricted": false,
            },
        })
    };
    let object = event.as_object_mut().expect("an object");
    object.insert("channel".into(), Value::String(channel));
    object.insert("event_ts".into(), Value::String(ts.clone()));
    object.insert("channel_type".into(), Value::String("channel".into()));
    if pos > 0 {
        object.insert("thread_ts".into(), Value::String(slack_ts(run, k - pos)));
        object.insert("parent_user_id".into(), Value::String(format!("U0{:08X}", t * 7 + 1)));
    }
    let body = json!({
        "token": "XXYYZZbenchverificationtoken",
        "team_id": TEAM,
        "context_team_id": TEAM,
        "api_app_id": "A0BENCH01",
        "event": event,
        "type": "event_callback",
        "event_id": format!("Ev0R{run}K{k:07}"),
        "event_time": super::message_time(run, k),
        "authorizations": [{"enterprise_id": null, "team_id": TEAM, "user_id": BOT_USER, "is_bot": true, "is_enterprise_install": false}],
        "is_ext_shared_channel": false,
        "event_context": format!("4-{}", BASE64.encode(rng.bytes(60))),
    });
    BenchMessage { kind: Kind::Slack, external_channel_id: None, body: serde_json::to_vec(&body).expect("json") }
}

/// WhatsApp message `k` of run `run`: a customer writing to one of the business numbers, text
/// or (one in five) a photo with a caption.
pub(in crate::bench) fn whatsapp(seed: u64, run: usize, k: usize) -> BenchMessage {
    let t = k / 3;
    let mut rng = Rng::new(seed, STREAM_WHATSAPP, k as u64);
    let mut who = Rng::new(seed, STREAM_WHATSAPP, 1 << 40 | t as u64);
    let (first, last) = person(&mut who);
    let number = t % WHATSAPP_NUMBERS;
    let wa_id = format!("4479{:08}", (run * 1_000_000 + t) % 100_000_000);
    let id = format!("wamid.{}", BASE64.encode(format!("HBgM{wa_id}FQIAEhgg{run}K{k:07}{}", rng.hex(16))));
    let timestamp = (super::message_time(run, k * 3)).to_string();
    let len = rng.range(20, 400);
    let text = prose(&mut rng, len, true);
    let message = if rng.percent(20) {
        json!({
            "from": wa_id, "id": id, "timestamp": timestamp, "type": "image",
            "image": {"caption": text, "mime_type": "image/jpeg", "sha256": BASE64.encode(rng.bytes(32)), "id": rng.range(100_000_000_000_000, 999_999_999_999_999).to_string()},
        })
    } else {
        json!({"from": wa_id, "id": id, "timestamp": timestamp, "type": "text", "text": {"body": text}})
    };
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": format!("10229012934{number:04}"),
            "changes": [{
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": format!("1555078{number:04}"), "phone_number_id": whatsapp_number_id(number)},
                    "contacts": [{"profile": {"name": format!("{first} {last}")}, "wa_id": wa_id}],
                    "messages": [message],
                },
                "field": "messages",
            }],
        }],
    });
    BenchMessage { kind: Kind::WhatsApp, external_channel_id: None, body: serde_json::to_vec(&body).expect("json") }
}

/// Telegram message `k` of run `run`: private chats with the bot, replies quoting the previous
/// message, now and then a photo with a caption.
pub(in crate::bench) fn telegram(seed: u64, run: usize, k: usize) -> BenchMessage {
    let (t, pos) = (k / 3, k % 3);
    let mut rng = Rng::new(seed, STREAM_TELEGRAM, k as u64);
    let mut who = Rng::new(seed, STREAM_TELEGRAM, 1 << 40 | t as u64);
    let (first, last) = person(&mut who);
    let chat_id = 5_000_000_000_i64 + (run * 1_000_000 + t) as i64;
    let user = json!({
        "id": chat_id, "is_bot": false, "first_name": first, "last_name": last,
        "username": format!("{}_{}", handle(first), t), "language_code": *who.pick(&["en", "de", "fr", "es", "pl"]),
    });
    let chat = json!({"id": chat_id, "first_name": first, "last_name": last, "username": format!("{}_{}", handle(first), t), "type": "private"});
    let date = super::message_time(run, k * 5);
    let len = rng.range(10, 300);
    let text = prose(&mut rng, len, true);
    let mut message = json!({"message_id": k + 1, "from": user, "chat": chat, "date": date});
    let object = message.as_object_mut().expect("an object");
    if rng.percent(15) {
        let file = |rng: &mut Rng, w: usize, h: usize, size: usize| json!({"file_id": format!("AgACAgQAAxkBAAI{}", rng.hex(40)), "file_unique_id": rng.hex(15), "file_size": size, "width": w, "height": h});
        let photo = json!([
            file(&mut rng, 90, 67, 1_420),
            file(&mut rng, 320, 240, 21_003),
            file(&mut rng, 1280, 960, 143_887)
        ]);
        object.insert("photo".into(), photo);
        object.insert("caption".into(), Value::String(text));
    } else {
        object.insert("text".into(), Value::String(text));
    }
    if pos > 0 {
        let reply = json!({"message_id": k, "from": user, "chat": chat, "date": date - 5, "text": "(earlier message)"});
        object.insert("reply_to_message".into(), reply);
    }
    let body = json!({"update_id": 800_000_000 + run * 10_000_000 + k, "message": message});
    BenchMessage {
        kind: Kind::Telegram,
        external_channel_id: Some(TELEGRAM_BOT.to_owned()),
        body: serde_json::to_vec(&body).expect("json"),
    }
}
