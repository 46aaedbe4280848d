//! Checks of what the caller passes in, shared by every scheme: header values, secrets, and the
//! signed timestamp against the clock.

use super::error::SignatureError;

/// Default allowed clock difference, either way, for timestamped schemes (5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

pub(super) fn required<'a>(value: &'a str, header: &'static str) -> Result<&'a str, SignatureError> {
    let value = value.trim();
    if value.is_empty() {
        Err(SignatureError::Missing(header))
    } else {
        Ok(value)
    }
}

pub(super) fn plain_secrets<'a>(secrets: &[&'a str]) -> Result<Vec<&'a [u8]>, SignatureError> {
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

pub(super) fn check_timestamp(
    timestamp: &str,
    header: &'static str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let ts: i64 =
        timestamp.parse().map_err(|_| SignatureError::Malformed(format!("{header} is not a unix timestamp")))?;
    if now.abs_diff(ts) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::TimestampOutOfTolerance { timestamp: ts, now, tolerance_secs });
    }
    Ok(())
}
