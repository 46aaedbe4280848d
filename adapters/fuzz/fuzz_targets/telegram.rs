//! Telegram Bot API update JSON through the `chat.telegram` adapter.
#![no_main]

use intake_adapters::ChannelType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    intake_adapters_fuzz::decode(ChannelType::Chat, "telegram", "123456789", body);
});
