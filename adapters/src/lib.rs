//! Channel adapters for intake.
//!
//! An adapter is pure translation: it gets the bytes and headers of one delivery and returns
//! normalized updates, or a typed error saying why the payload cannot be used. No I/O happens
//! here, so every adapter can be unit-tested and fuzzed on its own. The runtime (`intake`)
//! resolves entry points and conversations and applies the updates.

pub mod chat;
pub mod email;
pub mod model;
pub mod registry;
pub mod signature;
pub mod webhook;

pub use model::*;
pub use registry::AdapterRegistry;

use async_trait::async_trait;

/// Why an adapter refused a delivery. Every variant is permanent: retrying the same bytes gives
/// the same answer, so the worker dead-letters at once with `reason_code()` as the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdapterError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("payload is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("missing required field or header: {0}")]
    Missing(String),
    #[error("unsupported event: {0}")]
    Unsupported(String),
}

impl AdapterError {
    /// Stable machine-readable reason, used in dead-letter headers and metrics labels.
    pub fn reason_code(&self) -> &'static str {
        match self {
            AdapterError::Malformed(_) => "malformed_payload",
            AdapterError::TooLarge { .. } => "payload_too_large",
            AdapterError::Missing(_) => "missing_field",
            AdapterError::Unsupported(_) => "unsupported_event",
        }
    }
}

/// One item of a delivery: its update, or why that item alone cannot be used.
pub type DecodedItem = Result<NormalizedUpdate, AdapterError>;

/// Turns one channel's wire format into normalized updates.
#[async_trait]
pub trait ChannelAdapter: Send + Sync {
    /// The kind of channel this adapter serves (the first word of the routing key).
    fn channel_type(&self) -> ChannelType;
    /// The adapter key (the second word of the routing key), e.g. `email`, `slack`.
    fn adapter_key(&self) -> &str;
    /// Decode one delivery. An empty vector means "nothing to apply" (e.g. an ignored event
    /// type); the worker acks it and counts it as skipped.
    async fn decode(&self, delivery: &Delivery<'_>) -> Result<Vec<NormalizedUpdate>, AdapterError>;

    /// Decode one delivery item by item, for the worker: the outer error means the delivery
    /// cannot be read at all; an inner one fails only its item, and the worker applies the
    /// others (then dead-letters the delivery with that item's reason). Adapters whose deliveries
    /// carry several independent items (a JSON array of messages) override it; the default is
    /// [`decode`](Self::decode), all or nothing.
    async fn decode_items(&self, delivery: &Delivery<'_>) -> Result<Vec<DecodedItem>, AdapterError> {
        Ok(self.decode(delivery).await?.into_iter().map(Ok).collect())
    }

    /// Adjust an update once its entry point is known, still without I/O. Some facts depend on
    /// the entry point: an email from the mailbox's own address, or a Slack message from the
    /// entry point's bot user, is outbound. The default changes nothing.
    fn refine(&self, _update: &mut NormalizedUpdate, _entry_point: &EntryPointInfo<'_>) {}
}
