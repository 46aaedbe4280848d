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

mod error;
mod inputs;
mod mac;
mod meta;
mod slack;
mod standard_webhooks;
mod telegram;
#[cfg(test)]
mod tests;
mod twilio;

pub use error::SignatureError;
pub use inputs::DEFAULT_TOLERANCE_SECS;
pub use meta::{verify_meta, verify_meta_any, META_SIGNATURE_HEADER};
pub use slack::{verify_slack, verify_slack_any, SLACK_SIGNATURE_HEADER, SLACK_TIMESTAMP_HEADER};
pub use standard_webhooks::{
    sign_standard_webhooks, verify_standard_webhooks, STANDARD_WEBHOOKS_ID_HEADER, STANDARD_WEBHOOKS_SIGNATURE_HEADER,
    STANDARD_WEBHOOKS_TIMESTAMP_HEADER,
};
pub use telegram::{verify_telegram_secret_token, verify_telegram_secret_token_any, TELEGRAM_SECRET_TOKEN_HEADER};
pub use twilio::{verify_twilio, verify_twilio_any, TWILIO_SIGNATURE_HEADER};
