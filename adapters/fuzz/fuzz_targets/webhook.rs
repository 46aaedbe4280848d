//! Generic webhook JSON through the `webhook.webhook` adapter.
#![no_main]

use intake_adapters::ChannelType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    intake_adapters_fuzz::decode(ChannelType::Webhook, "webhook", "orders-api", body);
});
