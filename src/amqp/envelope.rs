//! The message contract publishers use (documented in the README, "Publishing").
//!
//! - routing key: `<channelType>.<adapterKey>` on the `intake.inbound` topic exchange;
//! - body: the channel's own payload (raw MIME, the provider's JSON, a form body);
//! - properties: `message_id` (the publisher's id, for tracing and the dead-letter list),
//!   `content_type`, `timestamp`, persistent delivery mode;
//! - headers below; all optional.

use intake_adapters::ChannelType;

/// The entry point's id in the outside system, when the publisher knows it.
pub const EXTERNAL_CHANNEL_ID: &str = "x-intake-external-channel-id";
/// The project (tenant) id, needed when one external id is an entry point of several projects.
pub const PROJECT: &str = "x-intake-project";
/// Informational; the routing key is authoritative.
pub const ADAPTER: &str = "x-intake-adapter";
/// Publish time in Unix milliseconds, for the publish→commit latency metric.
pub const PUBLISHED_AT_MS: &str = "x-intake-published-at-ms";

// Headers intake itself sets on retried and dead-lettered messages.
/// How many times intake has tried the message (1 on first delivery).
pub const ATTEMPT: &str = "x-intake-attempt";
pub const FIRST_SEEN: &str = "x-intake-first-seen";
pub const ORIGINAL_ROUTING_KEY: &str = "x-intake-original-routing-key";
pub const ORIGINAL_EXCHANGE: &str = "x-intake-original-exchange";
/// Stable reason code (`unknown_entry_point`, `malformed_payload`, …).
pub const REASON: &str = "x-intake-reason";
/// Human-readable error.
pub const ERROR: &str = "x-intake-error";
pub const DEAD_ID: &str = "x-intake-dead-id";
pub const DEAD_AT: &str = "x-intake-dead-at";
pub const REPLAYED: &str = "x-intake-replayed";

/// Longest `x-intake-error` intake writes, in bytes. Errors can quote the payload (an entry
/// point id, an idempotency key), and every header of a message must fit in one AMQP frame
/// (RabbitMQ's `frame_max`, 128 KiB by default): a bigger one is a connection error that would
/// end the session of every consumer, and the message would come back to do it again.
pub const MAX_ERROR_HEADER_BYTES: usize = 2048;

/// `error` cut to at most [`MAX_ERROR_HEADER_BYTES`] (on a character boundary), saying how much
/// was left out.
pub fn clip_error(error: &str) -> std::borrow::Cow<'_, str> {
    if error.len() <= MAX_ERROR_HEADER_BYTES {
        return error.into();
    }
    let suffix = format!("… ({} bytes in all)", error.len());
    let mut end = MAX_ERROR_HEADER_BYTES - suffix.len();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &error[..end]).into()
}

/// Split a routing key `<channelType>.<adapterKey>` (a third word, like `.outbound`, is kept).
pub fn parse_routing_key(routing_key: &str) -> Result<(ChannelType, &str, Option<&str>), String> {
    let mut parts = routing_key.splitn(3, '.');
    let channel_type: ChannelType = parts.next().unwrap_or_default().parse()?;
    let adapter_key = parts.next().filter(|k| !k.is_empty()).ok_or_else(|| {
        format!("routing key `{routing_key}` has no adapter key (expected `<channelType>.<adapterKey>`)")
    })?;
    Ok((channel_type, adapter_key, parts.next()))
}

/// The channel type an adapter key usually belongs to, for `intake publish`.
pub fn default_channel_type(adapter_key: &str) -> Option<ChannelType> {
    match adapter_key {
        "email" => Some(ChannelType::Email),
        "slack" | "telegram" | "whatsapp" | "twilio-sms" => Some(ChannelType::Chat),
        "webhook" => Some(ChannelType::Webhook),
        _ => None,
    }
}

/// A content type that fits the channel, for publishers that do not say.
pub fn default_content_type(channel_type: ChannelType, adapter_key: &str) -> &'static str {
    match (channel_type, adapter_key) {
        (ChannelType::Email, _) => "message/rfc822",
        (_, "twilio-sms") => "application/x-www-form-urlencoded",
        _ => "application/json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys() {
        assert_eq!(parse_routing_key("email.support"), Ok((ChannelType::Email, "support", None)));
        assert_eq!(parse_routing_key("email.support.outbound"), Ok((ChannelType::Email, "support", Some("outbound"))));
        assert!(parse_routing_key("fax.x").is_err());
        assert!(parse_routing_key("chat").is_err());
        assert!(parse_routing_key("chat.").is_err());
    }

    #[test]
    fn errors_are_clipped_to_fit_a_header() {
        assert_eq!(clip_error("no entry point for `shop`"), "no entry point for `shop`");
        let exact = "x".repeat(MAX_ERROR_HEADER_BYTES);
        assert_eq!(clip_error(&exact), exact);
        for long in [format!("no entry point for `{}`", "x".repeat(300 * 1024)), "é".repeat(100_000)] {
            let clipped = clip_error(&long);
            assert!(clipped.len() <= MAX_ERROR_HEADER_BYTES, "{}", clipped.len());
            assert!(clipped.ends_with(&format!("… ({} bytes in all)", long.len())), "{clipped}");
            assert!(long.starts_with(clipped.split('…').next().unwrap()));
        }
    }
}
