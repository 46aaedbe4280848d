//! Unit tests of every scheme against its documented example, tampering, rotation and missing
//! parts (the published vectors are in `adapters/tests/signature.rs`).

use super::mac::hmac_sha256;
use super::twilio::twilio_url_variants;
use super::*;

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1614265330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn flip_last_base64_char(sig: &str) -> String {
    // Change one character of the base64 payload (not the padding).
    let mut chars: Vec<char> = sig.chars().collect();
    let i = chars.iter().rposition(|c| *c != '=').unwrap() - 1;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

// --- Standard Webhooks ---

#[test]
fn standard_webhooks_spec_vector() {
    assert_eq!(sign_standard_webhooks(SW_SECRET, SW_ID, SW_TS, SW_BODY).unwrap(), SW_SIG);
    let ts = SW_TS.to_string();
    verify_standard_webhooks(&[SW_SECRET], SW_ID, &ts, SW_BODY, SW_SIG, SW_TS, DEFAULT_TOLERANCE_SECS).unwrap();
    // Without the whsec_ prefix too.
    verify_standard_webhooks(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], SW_ID, &ts, SW_BODY, SW_SIG, SW_TS, 300).unwrap();
}

#[test]
fn standard_webhooks_rejects_tampering() {
    let ts = SW_TS.to_string();
    let verify = |secrets: &[&str], id: &str, body: &[u8], sig: &str| {
        verify_standard_webhooks(secrets, id, &ts, body, sig, SW_TS, 300)
    };
    let mut body = SW_BODY.to_vec();
    body[3] ^= 0x01;
    assert_eq!(verify(&[SW_SECRET], SW_ID, &body, SW_SIG), Err(SignatureError::Mismatch));
    assert_eq!(verify(&[SW_SECRET], "msg_other", SW_BODY, SW_SIG), Err(SignatureError::Mismatch));
    assert_eq!(verify(&[SW_SECRET], SW_ID, SW_BODY, &flip_last_base64_char(SW_SIG)), Err(SignatureError::Mismatch));
    assert_eq!(verify(&["whsec_dGhlIHdyb25nIHNlY3JldA=="], SW_ID, SW_BODY, SW_SIG), Err(SignatureError::Mismatch));
    // A different timestamp changes the signed content.
    let later = (SW_TS + 1).to_string();
    let err = verify_standard_webhooks(&[SW_SECRET], SW_ID, &later, SW_BODY, SW_SIG, SW_TS, 300).unwrap_err();
    assert_eq!(err, SignatureError::Mismatch);
}

#[test]
fn standard_webhooks_timestamp_tolerance() {
    let ts = SW_TS.to_string();
    for now in [SW_TS - 300, SW_TS + 300] {
        verify_standard_webhooks(&[SW_SECRET], SW_ID, &ts, SW_BODY, SW_SIG, now, 300).unwrap();
    }
    for now in [SW_TS - 301, SW_TS + 301, SW_TS + 86_400] {
        let err = verify_standard_webhooks(&[SW_SECRET], SW_ID, &ts, SW_BODY, SW_SIG, now, 300).unwrap_err();
        assert_eq!(err.reason_code(), "signature_timestamp_out_of_tolerance");
    }
    let err = verify_standard_webhooks(&[SW_SECRET], SW_ID, "soon", SW_BODY, SW_SIG, SW_TS, 300).unwrap_err();
    assert_eq!(err.reason_code(), "signature_malformed");
}

#[test]
fn standard_webhooks_rotation_and_multiple_signatures() {
    let ts = SW_TS.to_string();
    let other = "whsec_dGhlIG90aGVyIHNlY3JldCBmb3Igcm90YXRpb24=";
    verify_standard_webhooks(&[other, SW_SECRET], SW_ID, &ts, SW_BODY, SW_SIG, SW_TS, 300).unwrap();
    verify_standard_webhooks(&[SW_SECRET, other], SW_ID, &ts, SW_BODY, SW_SIG, SW_TS, 300).unwrap();
    // The sender signs with both old and new secret; we only know the new one.
    let new_sig = sign_standard_webhooks(other, SW_ID, SW_TS, SW_BODY).unwrap();
    let header = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc {new_sig} {SW_SIG}");
    verify_standard_webhooks(&[other], SW_ID, &ts, SW_BODY, &header, SW_TS, 300).unwrap();
    // Only unknown versions: malformed.
    let err = verify_standard_webhooks(&[SW_SECRET], SW_ID, &ts, SW_BODY, "v2,abc", SW_TS, 300).unwrap_err();
    assert_eq!(err.reason_code(), "signature_malformed");
}

#[test]
fn standard_webhooks_missing_parts() {
    let ts = SW_TS.to_string();
    let v = |secrets: &[&str], id: &str, ts: &str, sig: &str| {
        verify_standard_webhooks(secrets, id, ts, SW_BODY, sig, SW_TS, 300)
    };
    assert_eq!(v(&[SW_SECRET], "", &ts, SW_SIG), Err(SignatureError::Missing("webhook-id")));
    assert_eq!(v(&[SW_SECRET], SW_ID, " ", SW_SIG), Err(SignatureError::Missing("webhook-timestamp")));
    assert_eq!(v(&[SW_SECRET], SW_ID, &ts, ""), Err(SignatureError::Missing("webhook-signature")));
    assert_eq!(v(&[], SW_ID, &ts, SW_SIG).unwrap_err().reason_code(), "signature_secret_invalid");
    assert_eq!(v(&["whsec_not base64!"], SW_ID, &ts, SW_SIG).unwrap_err().reason_code(), "signature_secret_invalid");
}

// --- Slack ---

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TS: &str = "1531420618";
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const SLACK_NOW: i64 = 1531420618;

#[test]
fn slack_documented_example() {
    verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW, 300).unwrap();
}

#[test]
fn slack_rejects_tampering_wrong_secret_and_stale_requests() {
    let mut body = SLACK_BODY.as_bytes().to_vec();
    body[10] ^= 0x20;
    assert_eq!(verify_slack(SLACK_SECRET, SLACK_TS, &body, SLACK_SIG, SLACK_NOW, 300), Err(SignatureError::Mismatch));
    let mut sig = SLACK_SIG.to_owned();
    sig.replace_range(10..11, if &SLACK_SIG[10..11] == "0" { "1" } else { "0" });
    assert_eq!(
        verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY.as_bytes(), &sig, SLACK_NOW, 300),
        Err(SignatureError::Mismatch)
    );
    let wrong = verify_slack("not-the-secret", SLACK_TS, SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW, 300);
    assert_eq!(wrong, Err(SignatureError::Mismatch));
    let stale =
        verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW + 301, 300).unwrap_err();
    assert_eq!(
        stale,
        SignatureError::TimestampOutOfTolerance { timestamp: SLACK_NOW, now: SLACK_NOW + 301, tolerance_secs: 300 }
    );
    let err = verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY.as_bytes(), "a2114d57", SLACK_NOW, 300).unwrap_err();
    assert_eq!(err.reason_code(), "signature_malformed");
    let err = verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY.as_bytes(), "v0=zz", SLACK_NOW, 300).unwrap_err();
    assert_eq!(err.reason_code(), "signature_malformed");
    assert_eq!(
        verify_slack(SLACK_SECRET, "", SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW, 300),
        Err(SignatureError::Missing("x-slack-request-timestamp"))
    );
    assert_eq!(
        verify_slack(SLACK_SECRET, SLACK_TS, SLACK_BODY.as_bytes(), "", SLACK_NOW, 300),
        Err(SignatureError::Missing("x-slack-signature"))
    );
}

#[test]
fn slack_rotation() {
    verify_slack_any(&["old-secret", SLACK_SECRET], SLACK_TS, SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW, 300)
        .unwrap();
    let err = verify_slack_any(&["old-secret", "older"], SLACK_TS, SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW, 300);
    assert_eq!(err, Err(SignatureError::Mismatch));
}

// --- Twilio ---

fn twilio_doc_params() -> Vec<(String, String)> {
    [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
const TWILIO_SIG: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

#[test]
fn twilio_documented_example() {
    verify_twilio("12345", TWILIO_URL, &twilio_doc_params(), TWILIO_SIG).unwrap();
    // Parameter order in the body does not matter.
    let mut reversed = twilio_doc_params();
    reversed.reverse();
    verify_twilio("12345", TWILIO_URL, &reversed, TWILIO_SIG).unwrap();
    // Nor does a default port the proxy added.
    verify_twilio("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", &twilio_doc_params(), TWILIO_SIG)
        .unwrap();
}

#[test]
fn twilio_rejects_tampering_and_wrong_token() {
    let mut params = twilio_doc_params();
    params[2].1 = "1235".into();
    assert_eq!(verify_twilio("12345", TWILIO_URL, &params, TWILIO_SIG), Err(SignatureError::Mismatch));
    let url = "https://mycompany.com/myapp.php?foo=1&bar=3";
    assert_eq!(verify_twilio("12345", url, &twilio_doc_params(), TWILIO_SIG), Err(SignatureError::Mismatch));
    let sig = flip_last_base64_char(TWILIO_SIG);
    assert_eq!(verify_twilio("12345", TWILIO_URL, &twilio_doc_params(), &sig), Err(SignatureError::Mismatch));
    assert_eq!(verify_twilio("54321", TWILIO_URL, &twilio_doc_params(), TWILIO_SIG), Err(SignatureError::Mismatch));
    let other_port = "https://mycompany.com:8443/myapp.php?foo=1&bar=2";
    assert_eq!(verify_twilio("12345", other_port, &twilio_doc_params(), TWILIO_SIG), Err(SignatureError::Mismatch));
    assert_eq!(
        verify_twilio("12345", TWILIO_URL, &twilio_doc_params(), ""),
        Err(SignatureError::Missing("x-twilio-signature"))
    );
    let err = verify_twilio("12345", TWILIO_URL, &twilio_doc_params(), "%%%").unwrap_err();
    assert_eq!(err.reason_code(), "signature_malformed");
}

#[test]
fn twilio_repeated_parameters_count_once() {
    // twilio-python's RequestValidator signs `sorted(set(values))` per name.
    let mut params = twilio_doc_params();
    params.push(("Digits".into(), "1234".into()));
    verify_twilio("12345", TWILIO_URL, &params, TWILIO_SIG).unwrap();
}

#[test]
fn twilio_rotation() {
    verify_twilio_any(&["secondary", "12345"], TWILIO_URL, &twilio_doc_params(), TWILIO_SIG).unwrap();
}

#[test]
fn twilio_url_variants_toggle_the_default_port() {
    assert_eq!(
        twilio_url_variants("https://a.example/x?y=1"),
        vec!["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
    );
    assert_eq!(twilio_url_variants("http://a.example:80"), vec!["http://a.example:80", "http://a.example"]);
    assert_eq!(twilio_url_variants("https://a.example:8443/x"), vec!["https://a.example:8443/x"]);
    assert_eq!(twilio_url_variants("https://[::1]/x"), vec!["https://[::1]/x", "https://[::1]:443/x"]);
    assert_eq!(twilio_url_variants("not a url"), vec!["not a url"]);
}

// --- Meta ---

const META_SECRET: &str = "meta-example-app-secret";
const META_BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

fn meta_header(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret.as_bytes(), &[body])))
}

#[test]
fn meta_signatures() {
    let header = meta_header(META_SECRET, META_BODY);
    verify_meta(META_SECRET, META_BODY, &header).unwrap();
    let mut body = META_BODY.to_vec();
    body[0] = b' ';
    assert_eq!(verify_meta(META_SECRET, &body, &header), Err(SignatureError::Mismatch));
    let mut flipped = header.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(verify_meta(META_SECRET, META_BODY, &flipped), Err(SignatureError::Mismatch));
    assert_eq!(verify_meta("other", META_BODY, &header), Err(SignatureError::Mismatch));
    verify_meta_any(&["other", META_SECRET], META_BODY, &header).unwrap();
    assert_eq!(verify_meta(META_SECRET, META_BODY, ""), Err(SignatureError::Missing("x-hub-signature-256")));
    let err = verify_meta(META_SECRET, META_BODY, header.trim_start_matches("sha256=")).unwrap_err();
    assert_eq!(err.reason_code(), "signature_malformed");
    assert_eq!(verify_meta("", META_BODY, &header).unwrap_err().reason_code(), "signature_secret_invalid");
}

// --- Telegram ---

#[test]
fn telegram_secret_token() {
    verify_telegram_secret_token("s3cr3t_T0ken-abc", "s3cr3t_T0ken-abc").unwrap();
    assert_eq!(verify_telegram_secret_token("s3cr3t_T0ken-abc", "s3cr3t_T0ken-abd"), Err(SignatureError::Mismatch));
    assert_eq!(verify_telegram_secret_token("s3cr3t_T0ken-abc", "s3cr3t_T0ken-ab"), Err(SignatureError::Mismatch));
    assert_eq!(verify_telegram_secret_token("other-token", "s3cr3t_T0ken-abc"), Err(SignatureError::Mismatch));
    assert_eq!(
        verify_telegram_secret_token("s3cr3t_T0ken-abc", ""),
        Err(SignatureError::Missing("x-telegram-bot-api-secret-token"))
    );
    verify_telegram_secret_token_any(&["old-token", "s3cr3t_T0ken-abc"], "s3cr3t_T0ken-abc").unwrap();
    assert_eq!(verify_telegram_secret_token("", "x").unwrap_err().reason_code(), "signature_secret_invalid");
}

#[test]
fn reason_codes_are_stable() {
    assert_eq!(SignatureError::Missing("x").reason_code(), "signature_missing");
    assert_eq!(SignatureError::Malformed(String::new()).reason_code(), "signature_malformed");
    assert_eq!(SignatureError::Mismatch.reason_code(), "signature_mismatch");
    let stale = SignatureError::TimestampOutOfTolerance { timestamp: 0, now: 1000, tolerance_secs: 300 };
    assert_eq!(stale.reason_code(), "signature_timestamp_out_of_tolerance");
    assert_eq!(stale.to_string(), "timestamp 0 is more than 300s away from now (1000)");
    assert_eq!(SignatureError::InvalidSecret(String::new()).reason_code(), "signature_secret_invalid");
}
