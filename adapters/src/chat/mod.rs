//! Chat adapters: slack, telegram, whatsapp, twilio-sms.
//!
//! Each provider module has an adapter struct implementing [`ChannelAdapter`] (channel type
//! `chat`) and a pure `decode(body, delivery, config)` function that does all the work, so it can
//! be unit-tested and fuzzed without an async runtime. Every adapter:
//!
//! - refuses bodies over [`MAX_BODY_BYTES`] with [`AdapterError::TooLarge`] before parsing;
//! - refuses unparsable payloads with [`AdapterError::Malformed`], naming the problem;
//! - returns `Ok(vec![])` for events of no interest (Slack `url_verification`, reactions, unknown
//!   WhatsApp fields, Telegram callback queries, ...);
//! - makes idempotency keys globally unique by prefixing them with the provider
//!   (`slack:{channel}:{ts}`, `telegram:{chat_id}:{message_id}`, `wa:{wamid}`, `twilio:{sid}`);
//! - stores the provider's own media/file id of an attachment in [`crate::Attachment::content_id`];
//! - names the payload's own channel id (Slack channel, Telegram chat, WhatsApp phone number id,
//!   Twilio number) as `external_channel_id`, and the delivery envelope's entry point id (when the
//!   publisher set one) as a fallback candidate, so a bot- or workspace-level entry point still
//!   resolves when the payload's own channel is not registered.
//!
//! # Direction and `refine`
//!
//! Messages from our own side (our bot, our own number, echoes of what an agent sent from the
//! provider's app) are [`crate::Direction::Outbound`] and never count as customer messages. What
//! the payload itself shows is decided in `decode`; what needs the entry point's settings is
//! decided in [`ChannelAdapter::refine`], from the entry point's `metadata`:
//!
//! | adapter | decided in `decode` | `refine` metadata keys |
//! | --- | --- | --- |
//! | slack | `bot_id`, subtype `bot_message`, the app's bot user from `authorizations[]` (`is_bot`), `SlackConfig::bot_user_id` | `botUserId`: a user id or an array of them |
//! | telegram | `from.is_bot` | `botId` (number or string) and/or `botUsername` (with or without `@`) |
//! | whatsapp | `from` equal to the business's own `display_phone_number`; `smb_message_echoes` | none needed: the payload names the business number |
//! | twilio-sms | status callbacks (`MessageStatus`) | `ownNumbers`: a number or an array; a message whose `From` is the resolved entry point's own number, or one of these, is outbound |

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{AdapterError, ChannelAdapter};

/// A chat provider's adapter type: `$name` holding its `$config`, with `new` and `config`, and
/// the [`ChannelAdapter`] impl (channel type `chat`, the module's `ADAPTER_KEY`) that hands each
/// delivery to the module's pure `decode` and, with `refine`, the entry point to its `refine`.
/// Written once here so the four providers differ only in what they decode.
macro_rules! chat_adapter {
    ($(#[$meta:meta])* $name:ident($config:ty) $(, $refine:ident)? $(; items = $items:ident)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            config: $config,
        }

        impl $name {
            pub fn new(config: $config) -> Self {
                Self { config }
            }

            pub fn config(&self) -> &$config {
                &self.config
            }
        }

        #[async_trait::async_trait]
        impl $crate::ChannelAdapter for $name {
            fn channel_type(&self) -> $crate::ChannelType {
                $crate::ChannelType::Chat
            }
            fn adapter_key(&self) -> &str {
                ADAPTER_KEY
            }
            async fn decode(
                &self,
                delivery: &$crate::Delivery<'_>,
            ) -> Result<Vec<$crate::NormalizedUpdate>, $crate::AdapterError> {
                decode(delivery.body, delivery, &self.config)
            }
            $(
                async fn decode_items(
                    &self,
                    delivery: &$crate::Delivery<'_>,
                ) -> Result<Vec<$crate::DecodedItem>, $crate::AdapterError> {
                    $items(delivery.body, delivery, &self.config)
                }
            )?
            $(
                fn $refine(&self, update: &mut $crate::NormalizedUpdate, entry_point: &$crate::EntryPointInfo<'_>) {
                    $refine(update, entry_point)
                }
            )?
        }
    };
}

pub mod slack;
pub mod telegram;
pub mod twilio;
pub mod whatsapp;

pub use slack::{SlackAdapter, SlackConfig};
pub use telegram::{TelegramAdapter, TelegramConfig};
pub use twilio::{TwilioSmsAdapter, TwilioSmsConfig};
pub use whatsapp::{WhatsAppAdapter, WhatsAppConfig};

/// Largest body a chat adapter will parse; bigger ones are refused before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One adapter of each chat provider with default configuration, ready to register.
pub fn default_adapters() -> Vec<Arc<dyn ChannelAdapter>> {
    vec![
        Arc::new(SlackAdapter::default()),
        Arc::new(TelegramAdapter::default()),
        Arc::new(WhatsAppAdapter::default()),
        Arc::new(TwilioSmsAdapter::default()),
    ]
}

pub(crate) fn check_size(body: &[u8]) -> Result<(), AdapterError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(AdapterError::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    Ok(())
}

/// Parse a JSON body, with serde's message (which names the field and position) on failure.
pub(crate) fn parse_json<T: DeserializeOwned>(provider: &str, body: &[u8]) -> Result<T, AdapterError> {
    serde_json::from_slice(body).map_err(|e| AdapterError::Malformed(format!("{provider} payload: {e}")))
}

/// Unix seconds to a UTC time; `what` names the field for the error.
pub(crate) fn unix_time(secs: i64, what: &str) -> Result<DateTime<Utc>, AdapterError> {
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| AdapterError::Malformed(format!("{what} `{secs}` is not a valid unix time")))
}

/// A trimmed, non-empty string, or `None`.
pub(crate) fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The strings an entry point's `metadata[key]` names: a string, a number, or an array of them.
/// Anything else (objects, booleans, nested arrays) is ignored; never panics.
pub(crate) fn metadata_strings(metadata: &Map<String, Value>, key: &str) -> Vec<String> {
    fn one(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => non_empty(Some(s)),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    match metadata.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(value) => one(value).into_iter().collect(),
        None => vec![],
    }
}

/// Cut a provider value down for an error message (payloads are untrusted and may be huge).
pub(crate) fn clip(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The provider `decode` functions' shape.
#[cfg(test)]
type DecodeFn<C> = fn(&[u8], &crate::Delivery<'_>, &C) -> Result<Vec<crate::NormalizedUpdate>, AdapterError>;

/// Unit tests: decode `body` as a delivery without envelope or headers, received at a fixed time.
#[cfg(test)]
fn decode_bare<C>(body: &str, config: &C, decode: DecodeFn<C>) -> Result<Vec<crate::NormalizedUpdate>, AdapterError> {
    let headers = crate::Headers::new();
    let delivery = crate::Delivery {
        body: body.as_bytes(),
        headers: &headers,
        external_channel_id: None,
        received_at: "2026-01-01T00:00:00Z".parse().expect("fixed time"),
    };
    decode(body.as_bytes(), &delivery, config)
}
