//! Meta's webhooks (WhatsApp Cloud API, Messenger, Instagram): `X-Hub-Signature-256`.

use super::error::SignatureError;
use super::inputs::{plain_secrets, required};
use super::mac::{hmac_sha256, matches_any};

pub const META_SIGNATURE_HEADER: &str = "x-hub-signature-256";

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
