//! [Standard Webhooks](https://www.standardwebhooks.com/): `webhook-id`, `webhook-timestamp`,
//! `webhook-signature`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::error::SignatureError;
use super::inputs::{check_timestamp, required};
use super::mac::{hmac_sha256, matches_any};

pub const STANDARD_WEBHOOKS_ID_HEADER: &str = "webhook-id";
pub const STANDARD_WEBHOOKS_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const STANDARD_WEBHOOKS_SIGNATURE_HEADER: &str = "webhook-signature";

/// Verify a [Standard Webhooks](https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md)
/// request.
///
/// `secrets` are `whsec_<base64>` (the prefix is optional); the signed content is
/// `{msg_id}.{timestamp}.{body}` under HMAC-SHA256; `signature_header` holds space-separated
/// `v1,<base64>` signatures (other versions are ignored). Passes when any secret matches any
/// `v1` signature. `timestamp` (unix seconds) must be within `tolerance_secs` of `now`, either
/// way ([`DEFAULT_TOLERANCE_SECS`](super::DEFAULT_TOLERANCE_SECS) is the spec's 5 minutes).
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
