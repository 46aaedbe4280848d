//! WhatsApp Cloud API webhook JSON through the `chat.whatsapp` adapter.
#![no_main]

use intake_adapters::ChannelType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    intake_adapters_fuzz::decode(ChannelType::Chat, "whatsapp", "106540352242922", body);
});
