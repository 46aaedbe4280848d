//! Slack Events API JSON through the `chat.slack` adapter.
#![no_main]

use intake_adapters::ChannelType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    intake_adapters_fuzz::decode(ChannelType::Chat, "slack", "C0123456789", body);
});
