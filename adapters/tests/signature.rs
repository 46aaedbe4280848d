//! Published signature test vectors (see `tests/fixtures/signature/ORIGINS.md`) checked through
//! `intake_adapters::signature`, plus tampering and property tests.

use std::path::PathBuf;

use intake_adapters::chat::twilio::form_params;
use intake_adapters::signature::*;
use proptest::prelude::*;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signature")
}

fn load(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir().join(name)).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn body_of(v: &Value) -> Vec<u8> {
    match v.get("body_file").and_then(Value::as_str) {
        Some(file) => std::fs::read(dir().join(file)).unwrap(),
        None => v.get("body").or(v.get("payload")).and_then(Value::as_str).unwrap().as_bytes().to_vec(),
    }
}

#[test]
fn every_signature_fixture_has_an_origin() {
    let origins = std::fs::read_to_string(dir().join("ORIGINS.md")).unwrap();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "ORIGINS.md" {
            assert!(origins.contains(&format!("`{name}`")), "{name} has no entry in ORIGINS.md");
        }
    }
}

#[test]
fn standard_webhooks_library_test_vector() {
    let v = load("standard_webhooks.json");
    let ts: i64 = s(&v, "timestamp").parse().unwrap();
    let body = body_of(&v);
    assert_eq!(sign_standard_webhooks(s(&v, "secret"), s(&v, "msg_id"), ts, &body).unwrap(), s(&v, "signature"));
    verify_standard_webhooks(
        &[s(&v, "secret")],
        s(&v, "msg_id"),
        s(&v, "timestamp"),
        &body,
        s(&v, "signature"),
        ts,
        DEFAULT_TOLERANCE_SECS,
    )
    .unwrap();
    // The libraries' multi-signature case: unknown versions and foreign signatures around ours.
    let header = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {} v1a,abc",
        s(&v, "signature")
    );
    verify_standard_webhooks(&[s(&v, "secret")], s(&v, "msg_id"), s(&v, "timestamp"), &body, &header, ts, 300).unwrap();
    // Rotation: an old and the current secret.
    verify_standard_webhooks(
        &["whsec_dGhlIG9sZCBzZWNyZXQgYmVmb3JlIHJvdGF0aW9u", s(&v, "secret")],
        s(&v, "msg_id"),
        s(&v, "timestamp"),
        &body,
        s(&v, "signature"),
        ts,
        300,
    )
    .unwrap();
    // 5 minutes either way, not a second more.
    for now in [ts - 300, ts + 300] {
        verify_standard_webhooks(
            &[s(&v, "secret")],
            s(&v, "msg_id"),
            s(&v, "timestamp"),
            &body,
            s(&v, "signature"),
            now,
            300,
        )
        .unwrap();
    }
    for now in [ts - 301, ts + 301] {
        let err = verify_standard_webhooks(
            &[s(&v, "secret")],
            s(&v, "msg_id"),
            s(&v, "timestamp"),
            &body,
            s(&v, "signature"),
            now,
            300,
        )
        .unwrap_err();
        assert_eq!(err.reason_code(), "signature_timestamp_out_of_tolerance");
    }
    // The libraries' "partial signature" and "invalid signature" cases.
    for bad in ["v1,", "v1,dawfeoifkpqwoekfpqoekf", &s(&v, "signature")[..8]] {
        assert!(
            verify_standard_webhooks(&[s(&v, "secret")], s(&v, "msg_id"), s(&v, "timestamp"), &body, bad, ts, 300)
                .is_err(),
            "{bad}"
        );
    }
}

#[test]
fn slack_documented_example() {
    let v = load("slack.json");
    let ts: i64 = s(&v, "timestamp").parse().unwrap();
    verify_slack(s(&v, "signing_secret"), s(&v, "timestamp"), &body_of(&v), s(&v, "signature"), ts, 300).unwrap();
    verify_slack_any(
        &["rotated-out", s(&v, "signing_secret")],
        s(&v, "timestamp"),
        &body_of(&v),
        s(&v, "signature"),
        ts + 299,
        300,
    )
    .unwrap();
    let mut body = body_of(&v);
    body.push(b'&');
    assert_eq!(
        verify_slack(s(&v, "signing_secret"), s(&v, "timestamp"), &body, s(&v, "signature"), ts, 300),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn twilio_published_vectors() {
    let v = load("twilio.json");
    for vector in v["vectors"].as_array().unwrap() {
        let name = s(vector, "name");
        let params: Vec<(String, String)> = match vector.get("params") {
            Some(Value::Array(pairs)) => {
                pairs.iter().map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned())).collect()
            }
            _ => form_params(&body_of(vector)).unwrap(),
        };
        verify_twilio(s(vector, "auth_token"), s(vector, "url"), &params, s(vector, "signature"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut tampered = params.clone();
        tampered[0].1.push('x');
        assert_eq!(
            verify_twilio(s(vector, "auth_token"), s(vector, "url"), &tampered, s(vector, "signature")),
            Err(SignatureError::Mismatch),
            "{name}"
        );
    }
}

#[test]
fn meta_vectors() {
    let v = load("meta.json");
    for vector in v["vectors"].as_array().unwrap() {
        let body = body_of(vector);
        verify_meta(s(vector, "app_secret"), &body, s(vector, "header"))
            .unwrap_or_else(|e| panic!("{}: {e}", s(vector, "name")));
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert_eq!(verify_meta(s(vector, "app_secret"), &tampered, s(vector, "header")), Err(SignatureError::Mismatch));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No header, body or secret makes a verifier panic, and a random header never verifies.
    #[test]
    fn verifiers_never_panic(header in ".{0,200}", ts in ".{0,20}", body in proptest::collection::vec(any::<u8>(), 0..256),
                             secret in ".{0,40}", now in any::<i64>(), tolerance in any::<i64>()) {
        let sw = verify_standard_webhooks(&[&secret], "msg_1", &ts, &body, &header, now, tolerance);
        prop_assert!(sw.is_err() || header.contains("v1,"));
        let _ = verify_slack(&secret, &ts, &body, &header, now, tolerance);
        let params = form_params(&body).unwrap_or_default();
        let _ = verify_twilio(&secret, &ts, &params, &header);
        let _ = verify_meta(&secret, &body, &header);
        let _ = verify_telegram_secret_token(&secret, &header);
    }
}
