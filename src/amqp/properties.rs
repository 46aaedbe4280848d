//! AMQP properties and headers as text, for people (`intake dlq show`, the ops console).

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

/// Every property that is set, in the protocol's order, except the headers
/// ([`header_lines`]). The timestamp is shown with its UTC time.
pub fn property_lines(p: &BasicProperties) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut text = |name, value: Option<String>| {
        if let Some(v) = value {
            out.push((name, v));
        }
    };
    let short = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    text("content_type", short(p.content_type()));
    text("content_encoding", short(p.content_encoding()));
    text(
        "delivery_mode",
        p.delivery_mode().map(|m| match m {
            2 => "2 (persistent)".to_owned(),
            1 => "1 (transient)".to_owned(),
            m => m.to_string(),
        }),
    );
    text("priority", p.priority().map(|v| v.to_string()));
    text("correlation_id", short(p.correlation_id()));
    text("reply_to", short(p.reply_to()));
    text("expiration", short(p.expiration()));
    text("message_id", short(p.message_id()));
    text(
        "timestamp",
        p.timestamp().map(|t| match chrono::DateTime::from_timestamp(t as i64, 0) {
            Some(at) => format!("{t} ({})", at.to_rfc3339()),
            None => t.to_string(),
        }),
    );
    text("type", short(p.kind()));
    text("user_id", short(p.user_id()));
    text("app_id", short(p.app_id()));
    text("cluster_id", short(p.cluster_id()));
    out
}

/// Every header, sorted by name, nested tables and arrays (RabbitMQ's `x-death`) written out.
pub fn header_lines(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    let Some(headers) = headers else { return Vec::new() };
    let mut out: Vec<(String, String)> =
        headers.inner().iter().map(|(k, v)| (k.as_str().to_owned(), value_text(v))).collect();
    out.sort();
    out
}

/// A header value as text: scalars as they are, tables as `{k: v, …}`, arrays as `[…]`.
pub fn value_text(value: &AMQPValue) -> String {
    if let Some(s) = super::value_string(value) {
        return s;
    }
    match value {
        AMQPValue::FieldTable(t) => {
            let fields: Vec<String> =
                t.inner().iter().map(|(k, v)| format!("{}: {}", k.as_str(), value_text(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
        AMQPValue::FieldArray(a) => {
            let items: Vec<String> = a.as_slice().iter().map(value_text).collect();
            format!("[{}]", items.join(", "))
        }
        AMQPValue::Void => String::new(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    #[test]
    fn every_property_and_header_is_shown() {
        let mut headers = FieldTable::default();
        headers.insert("x-intake-external-channel-id".into(), super::super::long_string("shop"));
        headers.insert("x-intake-attempt".into(), AMQPValue::LongLongInt(2));
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("queue".into(), super::super::long_string("intake.webhook"));
        headers.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])));
        let p = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_timestamp(1_700_000_000)
            .with_delivery_mode(2)
            .with_app_id("shop".into())
            .with_headers(headers);
        let props = property_lines(&p);
        assert!(props.contains(&("message_id", "m-1".into())));
        assert!(props.contains(&("app_id", "shop".into())));
        assert!(props.contains(&("delivery_mode", "2 (persistent)".into())));
        assert!(props.iter().any(|(n, v)| *n == "timestamp" && v.starts_with("1700000000 (2023-11-14T22:13:20")));
        let lines = header_lines(p.headers().as_ref());
        assert_eq!(lines[0].0, "x-death");
        assert!(lines[0].1.contains("queue: intake.webhook"), "{}", lines[0].1);
        assert!(lines.contains(&("x-intake-external-channel-id".into(), "shop".into())));
        assert!(lines.contains(&("x-intake-attempt".into(), "2".into())));
    }
}
