//! Twilio form-encoded webhook through the `chat.twilio-sms` adapter.
#![no_main]

use intake_adapters::ChannelType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    intake_adapters_fuzz::decode(ChannelType::Chat, "twilio-sms", "+14155238886", body);
});
