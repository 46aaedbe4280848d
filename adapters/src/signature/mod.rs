//! Webhook signature verification (pure functions).
//!
//! Every comparison of a computed signature with a received one is constant-time (`subtle`), and
//! every check of one candidate against several secrets or signatures looks at all of them, so
//! timing says nothing about which one matched. Secret rotation: each scheme has a `*_any` form
//! taking several secrets; a request passes when any secret matches any signature it carries.
//!
//! | scheme | function | headers |
//! | --- | --- | --- |
//! | [Standard Webhooks](https://www.standardwebhooks.com/) | [`verify_standard_webhooks`] | `webhook-id`, `webhook-timestamp`, `webhook-signature` |
//! | Slack signing secret | [`verify_slack`] | `X-Slack-Request-Timestamp`, `X-Slack-Signature` |
//! | Twilio request validation | [`verify_twilio`] | `X-Twilio-Signature` |
//! | Meta (WhatsApp Cloud API) | [`verify_meta`] | `X-Hub-Signature-256` |
//! | Telegram `secret_token` | [`verify_telegram_secret_token`] | `X-Telegram-Bot-Api-Secret-Token` |
//!
//! Empty header values count as missing.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// Default allowed clock difference, either way, for timestamped schemes (5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

pub const STANDARD_WEBHOOKS_ID_HEADER: &str = "webhook-id";
pub const STANDARD_WEBHOOKS_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const STANDARD_WEBHOOKS_SIGNATURE_HEADER: &str = "webhook-signature";
pub const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SLACK_SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TWILIO_SIGNATURE_HEADER: &str = "x-twilio-signature";
pub const META_SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const TELEGRAM_SECRET_TOKEN_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header (named, lower-case) is absent or empty.
    #[error("missing header: {0}")]
    Missing(&'static str),
    /// A header is present but not in the scheme's format.
    #[error("malformed signature header: {0}")]
    Malformed(String),
    /// Well-formed, but no secret produces the signature the request carries.
    #[error("signature mismatch")]
    Mismatch,
    /// The signed timestamp is too far from now (a replay, or a badly skewed clock).
    #[error("timestamp {timestamp} is more than {tolerance_secs}s away from now ({now})")]
    TimestampOutOfTolerance { timestamp: i64, now: i64, tolerance_secs: i64 },
    /// The configured secret cannot be used (empty, or not base64 where the scheme needs it).
    #[error("invalid verification secret: {0}")]
    InvalidSecret(String),
}

impl SignatureError {
    /// Stable machine-readable reason, for logs, metrics labels and dead-letter headers.
    pub fn reason_code(&self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "signature_missing",
            SignatureError::Malformed(_) => "signature_malformed",
            SignatureError::Mismatch => "signature_mismatch",
            SignatureError::TimestampOutOfTolerance { .. } => "signature_timestamp_out_of_tolerance",
            SignatureError::InvalidSecret(_) => "signature_secret_invalid",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Standard Webhooks
// ---------------------------------------------------------------------------------------------

/// Verify a [Standard Webhooks](https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md)
/// request.
///
/// `secrets` are `whsec_<base64>` (the prefix is optional); the signed content is
/// `{msg_id}.{timestamp}.{body}` under HMAC-SHA256; `signature_header` holds space-separated
/// `v1,<base64>` signatures (other versions are ignored). Passes when any secret matches any
/// `v1` signature. `timestamp` (unix seconds) must be within `tolerance_secs` of `now`, either
/// way ([`DEFAULT_TOLERANCE_SECS`] is the spec's 5 minutes).
pub fn verify_standard_webhooks(
    secrets: &[&str],
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let keys = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            standard_webhooks_key(s)
                .ok_or_else(|| SignatureError::InvalidSecret(format!("secret #{i} is not `whsec_<base64>`")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(SignatureError::InvalidSecret("no secret configured".into()));
    }
    let msg_id = required(msg_id, STANDARD_WEBHOOKS_ID_HEADER)?;
    let timestamp = required(timestamp, STANDARD_WEBHOOKS_TIMESTAMP_HEADER)?;
    let signature_header = required(signature_header, STANDARD_WEBHOOKS_SIGNATURE_HEADER)?;
    check_timestamp(timestamp, STANDARD_WEBHOOKS_TIMESTAMP_HEADER, now, tolerance_secs)?;

    let candidates: Vec<Vec<u8>> = signature_header
        .split_whitespace()
        .filter_map(|part| part.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64.decode(sig).ok())
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::Malformed(format!(
            "{STANDARD_WEBHOOKS_SIGNATURE_HEADER} has no `v1,<base64>` signature"
        )));
    }
    let parts: [&[u8]; 5] = [msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    let tags = keys.iter().map(|key| hmac_sha256(key, &parts));
    matches_any(tags, &candidates)
}

/// Compute the `v1,<base64>` signature of a Standard Webhooks message (for senders and tests).
pub fn sign_standard_webhooks(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let key = standard_webhooks_key(secret)
        .ok_or_else(|| SignatureError::InvalidSecret("secret is not `whsec_<base64>`".into()))?;
    let timestamp = timestamp.to_string();
    let tag = hmac_sha256(&key, &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
    Ok(format!("v1,{}", BASE64.encode(tag)))
}

fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    let secret = secret.trim();
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64.decode(encoded).ok().filter(|key| !key.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------------

/// Verify a Slack request: `X-Slack-Signature: v0=<hex>` is HMAC-SHA256 of
/// `v0:{X-Slack-Request-Timestamp}:{body}` keyed with the app's signing secret; the timestamp
/// must be within `tolerance_secs` of `now` (Slack recommends 5 minutes).
pub fn verify_slack(
    signing_secret: &str,
    timestamp_header: &str,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    verify_slack_any(&[signing_secret], timestamp_header, body, signature_header, now, tolerance_secs)
}

/// [`verify_slack`] with several signing secrets (rotation).
pub fn verify_slack_any(
    signing_secrets: &[&str],
    timestamp_header: &str,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let keys = plain_secrets(signing_secrets)?;
    let timestamp = required(timestamp_header, SLACK_TIMESTAMP_HEADER)?;
    let signature = required(signature_header, SLACK_SIGNATURE_HEADER)?;
    check_timestamp(timestamp, SLACK_TIMESTAMP_HEADER, now, tolerance_secs)?;
    let hex_sig = signature
        .strip_prefix("v0=")
        .ok_or_else(|| SignatureError::Malformed(format!("{SLACK_SIGNATURE_HEADER} does not start with `v0=`")))?;
    let candidate = hex::decode(hex_sig)
        .map_err(|_| SignatureError::Malformed(format!("{SLACK_SIGNATURE_HEADER} is not `v0=<hex>`")))?;
    let parts: [&[u8]; 4] = [b"v0:", timestamp.as_bytes(), b":", body];
    matches_any(keys.iter().map(|key| hmac_sha256(key, &parts)), &[candidate])
}

// ---------------------------------------------------------------------------------------------
// Twilio
// ---------------------------------------------------------------------------------------------

/// Verify a Twilio request: `X-Twilio-Signature` is base64 of HMAC-SHA1, keyed with the auth
/// token, of the full URL Twilio called (scheme, host, path, query) followed by every POST
/// parameter sorted by name (a repeated name's values sorted too, identical pairs once), name and
/// value concatenated without separators. `form_params` are
/// the decoded form fields (see [`crate::chat::twilio::form_params`]); pass none for GET.
///
/// As Twilio's own libraries do, the URL is also tried with the default port added or removed
/// (`https://host/x` ⇄ `https://host:443/x`), since proxies differ in what they report.
pub fn verify_twilio(
    auth_token: &str,
    full_url: &str,
    form_params: &[(String, String)],
    signature_header: &str,
) -> Result<(), SignatureError> {
    verify_twilio_any(&[auth_token], full_url, form_params, signature_header)
}

/// [`verify_twilio`] with several auth tokens (primary and secondary during rotation).
pub fn verify_twilio_any(
    auth_tokens: &[&str],
    full_url: &str,
    form_params: &[(String, String)],
    signature_header: &str,
) -> Result<(), SignatureError> {
    let keys = plain_secrets(auth_tokens)?;
    let signature = required(signature_header, TWILIO_SIGNATURE_HEADER)?;
    let candidate = BASE64
        .decode(signature)
        .map_err(|_| SignatureError::Malformed(format!("{TWILIO_SIGNATURE_HEADER} is not base64")))?;

    // As Twilio's libraries do: names sorted, each name's values sorted, repeated identical
    // name/value pairs counted once.
    let mut sorted: Vec<&(String, String)> = form_params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut params = Vec::new();
    for (name, value) in sorted {
        params.extend_from_slice(name.as_bytes());
        params.extend_from_slice(value.as_bytes());
    }
    let urls = twilio_url_variants(full_url);
    let tags = keys
        .iter()
        .flat_map(|key| urls.iter().map(|url| hmac_sha1(key, &[url.as_bytes(), &params])).collect::<Vec<_>>());
    matches_any(tags, &[candidate])
}

/// `url` itself, plus the same URL with its scheme's default port removed (when given) or added
/// (when absent).
fn twilio_url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some(scheme_end) = url.find("://") else { return out };
    let default_port = match url[..scheme_end].to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let prefix = &url[..scheme_end + 3];
    let rest = &url[scheme_end + 3..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_len);
    if authority.is_empty() || authority.contains('@') {
        return out;
    }
    let port_start = authority.rfind(':').filter(|&i| !authority[i..].contains(']'));
    match port_start {
        Some(i) if &authority[i + 1..] == default_port => out.push(format!("{prefix}{}{tail}", &authority[..i])),
        Some(_) => {}
        None => out.push(format!("{prefix}{authority}:{default_port}{tail}")),
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Meta / WhatsApp
// ---------------------------------------------------------------------------------------------

/// Verify a Meta webhook (WhatsApp Cloud API, Messenger, Instagram): `X-Hub-Signature-256:
/// sha256=<hex>` is HMAC-SHA256 of the raw body keyed with the app secret.
pub fn verify_meta(app_secret: &str, body: &[u8], header: &str) -> Result<(), SignatureError> {
    verify_meta_any(&[app_secret], body, header)
}

/// [`verify_meta`] with several app secrets (rotation).
pub fn verify_meta_any(app_secrets: &[&str], body: &[u8], header: &str) -> Result<(), SignatureError> {
    let keys = plain_secrets(app_secrets)?;
    let signature = required(header, META_SIGNATURE_HEADER)?;
    let hex_sig = signature
        .strip_prefix("sha256=")
        .ok_or_else(|| SignatureError::Malformed(format!("{META_SIGNATURE_HEADER} does not start with `sha256=`")))?;
    let candidate = hex::decode(hex_sig)
        .map_err(|_| SignatureError::Malformed(format!("{META_SIGNATURE_HEADER} is not `sha256=<hex>`")))?;
    matches_any(keys.iter().map(|key| hmac_sha256(key, &[body])), &[candidate])
}

// ---------------------------------------------------------------------------------------------
// Telegram
// ---------------------------------------------------------------------------------------------

/// Verify Telegram's `X-Telegram-Bot-Api-Secret-Token` against the `secret_token` given to
/// `setWebhook`. Constant-time for equal lengths (the length itself is not secret).
pub fn verify_telegram_secret_token(expected: &str, header: &str) -> Result<(), SignatureError> {
    verify_telegram_secret_token_any(&[expected], header)
}

/// [`verify_telegram_secret_token`] accepting any of several tokens (rotation).
pub fn verify_telegram_secret_token_any(expected: &[&str], header: &str) -> Result<(), SignatureError> {
    let tokens = plain_secrets(expected)?;
    let header = required(header, TELEGRAM_SECRET_TOKEN_HEADER)?;
    matches_any(tokens.iter().map(|t| t.to_vec()), &[header.as_bytes().to_vec()])
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn required<'a>(value: &'a str, header: &'static str) -> Result<&'a str, SignatureError> {
    let value = value.trim();
    if value.is_empty() {
        Err(SignatureError::Missing(header))
    } else {
        Ok(value)
    }
}

fn plain_secrets<'a>(secrets: &[&'a str]) -> Result<Vec<&'a [u8]>, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::InvalidSecret("no secret configured".into()));
    }
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.is_empty() {
                Err(SignatureError::InvalidSecret(format!("secret #{i} is empty")))
            } else {
                Ok(s.as_bytes())
            }
        })
        .collect()
}

fn check_timestamp(timestamp: &str, header: &'static str, now: i64, tolerance_secs: i64) -> Result<(), SignatureError> {
    let ts: i64 =
        timestamp.parse().map_err(|_| SignatureError::Malformed(format!("{header} is not a unix timestamp")))?;
    if now.abs_diff(ts) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::TimestampOutOfTolerance { timestamp: ts, now, tolerance_secs });
    }
    Ok(())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether any expected tag equals any candidate, comparing every pair in constant time.
fn matches_any(expected: impl Iterator<Item = Vec<u8>>, candidates: &[Vec<u8>]) -> Result<(), SignatureError> {
    let mut found = Choice::from(0);
    for tag in expected {
        for candidate in candidates {
            found |= tag.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if bool::from(found) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
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
        verify_standard_webhooks(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], SW_ID, &ts, SW_BODY, SW_SIG, SW_TS, 300)
            .unwrap();
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
        assert_eq!(
            v(&["whsec_not base64!"], SW_ID, &ts, SW_SIG).unwrap_err().reason_code(),
            "signature_secret_invalid"
        );
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
        assert_eq!(
            verify_slack(SLACK_SECRET, SLACK_TS, &body, SLACK_SIG, SLACK_NOW, 300),
            Err(SignatureError::Mismatch)
        );
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
        let err =
            verify_slack_any(&["old-secret", "older"], SLACK_TS, SLACK_BODY.as_bytes(), SLACK_SIG, SLACK_NOW, 300);
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
}
