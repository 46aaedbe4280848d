//! Raw RFC 5322 message through the `email.email` adapter (MIME, charsets, HTML, quotes), then
//! once more with attachment bytes kept (the worker's setting when an attachment store is on).
#![no_main]

use chrono::DateTime;
use intake_adapters::email::{self, EmailConfig};
use intake_adapters::{ChannelType, Delivery, Headers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    intake_adapters_fuzz::decode(ChannelType::Email, "email", "support@example.com", body);

    let config = EmailConfig { max_attachment_bytes: 1024, keep_attachment_content: true };
    let headers = Headers::new();
    let received_at = DateTime::from_timestamp(1_767_225_600, 0).expect("valid time");
    let delivery = Delivery { body, headers: &headers, external_channel_id: None, received_at };
    if let Ok(updates) = email::decode(&delivery, &config) {
        for update in updates {
            if let intake_adapters::UpdateAction::Append(message) = &update.action {
                for attachment in &message.attachments {
                    if let Some(content) = &attachment.content {
                        assert!(content.0.len() as u64 <= config.max_attachment_bytes);
                        assert_eq!(attachment.size, Some(content.0.len() as u64));
                    }
                }
            }
        }
    }
});
