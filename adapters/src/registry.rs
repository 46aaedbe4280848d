//! Lookup of adapters by `(channelType, adapterKey)`, the two words of a routing key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{ChannelAdapter, ChannelType};

#[derive(Clone, Default)]
pub struct AdapterRegistry {
    adapters: HashMap<(ChannelType, String), Arc<dyn ChannelAdapter>>,
}

impl AdapterRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every adapter intake ships, under its default key, with default settings.
    pub fn with_defaults() -> Self {
        Self::with_email_config(crate::email::EmailConfig::default())
    }

    /// Every adapter intake ships, with the email adapter configured.
    pub fn with_email_config(email: crate::email::EmailConfig) -> Self {
        let mut registry = Self::new();
        registry.register(Arc::new(crate::email::EmailAdapter::new(email)));
        for adapter in crate::chat::default_adapters() {
            registry.register(adapter);
        }
        registry.register(Arc::new(crate::webhook::GenericWebhookAdapter::new(ChannelType::Webhook, "webhook")));
        registry
    }

    pub fn register(&mut self, adapter: Arc<dyn ChannelAdapter>) {
        self.adapters.insert((adapter.channel_type(), adapter.adapter_key().to_owned()), adapter);
    }

    pub fn get(&self, channel_type: ChannelType, adapter_key: &str) -> Option<Arc<dyn ChannelAdapter>> {
        self.adapters.get(&(channel_type, adapter_key.to_owned())).cloned()
    }

    /// `(channelType, adapterKey)` pairs, sorted, for help texts and logs.
    pub fn keys(&self) -> Vec<(ChannelType, String)> {
        let mut keys: Vec<_> = self.adapters.keys().cloned().collect();
        keys.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        keys
    }
}
