//! Every webhook signature verifier with arbitrary secrets, headers, clock and body: none may
//! panic, and a signature computed the way the provider documents it must verify.
//!
//! Input (so that seeds are readable text): `\n`-separated fields, missing ones empty:
//!
//! 0. secrets, `,`-separated (rotation)
//! 1. `webhook-id`
//! 2. timestamp (`webhook-timestamp` and `X-Slack-Request-Timestamp`)
//! 3. signature (`webhook-signature`, `X-Slack-Signature`, `X-Twilio-Signature`,
//!    `X-Hub-Signature-256` and `X-Telegram-Bot-Api-Secret-Token`)
//! 4. now (unix seconds; unparsable: the timestamp, else 0)
//! 5. tolerance (seconds; unparsable: 300)
//! 6. the URL Twilio called
//! 7. everything after: the body
#![no_main]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use intake_adapters::chat::twilio;
use intake_adapters::signature::*;
use libfuzzer_sys::fuzz_target;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().to_vec()
}

/// A header value as the gateway sees it: HTTP parsers strip surrounding white space.
fn is_header_like(s: &str) -> bool {
    !s.is_empty() && s.trim() == s
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.splitn(8, |&b| b == b'\n').collect();
    let field = |i: usize| String::from_utf8_lossy(fields.get(i).copied().unwrap_or_default()).into_owned();
    let (secrets_field, msg_id, timestamp, signature) = (field(0), field(1), field(2), field(3));
    let (now_field, tolerance_field, url) = (field(4), field(5), field(6));
    let body: &[u8] = fields.get(7).copied().unwrap_or_default();
    let secrets: Vec<&str> = secrets_field.split(',').collect();
    let ts: Option<i64> = timestamp.trim().parse().ok();
    let now: i64 = now_field.trim().parse().ok().or(ts).unwrap_or(0);
    let tolerance: i64 = tolerance_field.trim().parse().unwrap_or(DEFAULT_TOLERANCE_SECS);

    // Nothing may panic, whatever the input.
    let _ = verify_standard_webhooks(&secrets, &msg_id, &timestamp, body, &signature, now, tolerance);
    let _ = verify_slack(secrets[0], &timestamp, body, &signature, now, tolerance);
    let _ = verify_slack_any(&secrets, &timestamp, body, &signature, now, tolerance);
    let _ = verify_meta(secrets[0], body, &signature);
    let _ = verify_meta_any(&secrets, body, &signature);
    let _ = verify_telegram_secret_token(secrets[0], &signature);
    let _ = verify_telegram_secret_token_any(&secrets, &signature);
    let params = twilio::form_params(body);
    let params = params.as_deref().unwrap_or_default();
    let _ = verify_twilio(secrets[0], &url, params, &signature);
    let _ = verify_twilio_any(&secrets, &url, params, &signature);
    for secret in &secrets {
        let _ = sign_standard_webhooks(secret, &msg_id, now, body);
    }
    // Error values are logged and used as metric labels.
    if let Err(e) = verify_slack_any(&secrets, &timestamp, body, &signature, now, tolerance) {
        assert!(!e.reason_code().is_empty());
        let _ = e.to_string();
    }

    // Round trips: the signature the provider would send verifies, with any of the secrets.
    if secrets.iter().any(|s| s.is_empty()) {
        return;
    }
    let last = secrets[secrets.len() - 1];
    let key = last.as_bytes();

    if is_header_like(&msg_id) {
        // Only `whsec_<base64>` secrets can sign; one that cannot makes every request fail.
        let valid: Vec<&str> =
            secrets.iter().copied().filter(|s| sign_standard_webhooks(s, &msg_id, now, body).is_ok()).collect();
        if let Some(secret) = valid.last() {
            let sig = sign_standard_webhooks(secret, &msg_id, now, body).expect("signed above");
            let header = format!("v2,xyz {sig}");
            let verified = verify_standard_webhooks(&valid, &msg_id, &now.to_string(), body, &header, now, 0);
            assert_eq!(verified, Ok(()), "standard webhooks round trip");
        }
    }

    if let Some(ts) = ts.filter(|_| is_header_like(&timestamp)) {
        let sig = format!("v0={}", hex::encode(hmac_sha256(key, &[b"v0:", timestamp.as_bytes(), b":", body])));
        assert_eq!(verify_slack_any(&secrets, &timestamp, body, &sig, ts, 0), Ok(()), "slack round trip");
    }

    let sig = format!("sha256={}", hex::encode(hmac_sha256(key, &[body])));
    assert_eq!(verify_meta_any(&secrets, body, &sig), Ok(()), "meta round trip");

    if is_header_like(last) {
        assert_eq!(verify_telegram_secret_token_any(&secrets, last), Ok(()), "telegram round trip");
    }

    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let signed: String = sorted.iter().map(|(k, v)| format!("{k}{v}")).collect();
    let sig = BASE64.encode(hmac_sha1(key, &[url.as_bytes(), signed.as_bytes()]));
    assert_eq!(verify_twilio_any(&secrets, &url, params, &sig), Ok(()), "twilio round trip");
});
