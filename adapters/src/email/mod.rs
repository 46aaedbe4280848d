//! Email adapter (`email.<adapterKey>`, body = raw RFC 5322 message). Stub: filled in by the
//! email work; the public surface below is what the runtime uses.

use async_trait::async_trait;

use crate::{AdapterError, ChannelAdapter, ChannelType, Delivery, EntryPointInfo, NormalizedUpdate};

/// The adapter key (second word of the routing key `email.email`).
pub const ADAPTER_KEY: &str = "email";

/// Settings of the email adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// Attachments larger than this keep their metadata only; their bytes are never kept.
    pub max_attachment_bytes: u64,
    /// Keep attachment bytes in [`crate::Attachment::content`] for the runtime's store.
    pub keep_attachment_content: bool,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig { max_attachment_bytes: 25 * 1024 * 1024, keep_attachment_content: false }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EmailAdapter {
    config: EmailConfig,
}

impl EmailAdapter {
    pub fn new(config: EmailConfig) -> Self {
        Self { config }
    }
}

/// Pure decode function, exposed for fuzzing.
pub fn decode(_delivery: &Delivery<'_>, _config: &EmailConfig) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    Err(AdapterError::Unsupported("the email adapter is not implemented yet".into()))
}

/// Mark messages sent from the mailbox itself (or an agent domain) as outbound.
pub fn refine(_update: &mut NormalizedUpdate, _entry_point: &EntryPointInfo<'_>) {}

#[async_trait]
impl ChannelAdapter for EmailAdapter {
    fn channel_type(&self) -> ChannelType {
        ChannelType::Email
    }
    fn adapter_key(&self) -> &str {
        ADAPTER_KEY
    }
    async fn decode(&self, delivery: &Delivery<'_>) -> Result<Vec<NormalizedUpdate>, AdapterError> {
        decode(delivery, &self.config)
    }
    fn refine(&self, update: &mut NormalizedUpdate, entry_point: &EntryPointInfo<'_>) {
        refine(update, entry_point)
    }
}
