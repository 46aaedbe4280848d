//! Telegram's `secret_token`: `X-Telegram-Bot-Api-Secret-Token`.

use super::error::SignatureError;
use super::inputs::{plain_secrets, required};
use super::mac::matches_any;

pub const TELEGRAM_SECRET_TOKEN_HEADER: &str = "x-telegram-bot-api-secret-token";

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
