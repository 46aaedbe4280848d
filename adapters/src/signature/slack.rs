//! Slack's signing secret: `X-Slack-Request-Timestamp`, `X-Slack-Signature`.

use super::error::SignatureError;
use super::inputs::{check_timestamp, plain_secrets, required};
use super::mac::{hmac_sha256, matches_any};

pub const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
pub const SLACK_SIGNATURE_HEADER: &str = "x-slack-signature";

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
