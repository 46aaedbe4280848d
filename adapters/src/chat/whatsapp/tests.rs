//! Unit tests of the WhatsApp adapter's edge cases (the payload corpus is in `adapters/tests`).

use super::message::same_number;
use super::*;
use crate::{Direction, NormalizedMessage};

fn run(body: &str) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    crate::chat::decode_bare(body, &WhatsAppConfig::default(), decode)
}

fn wrap(value: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{value}}}]}}]}}"#
    )
}

#[test]
fn skips_reactions_and_names_bad_timestamps() {
    let reaction = wrap(
        r#"{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","timestamp":"1","type":"reaction",
            "reaction":{"message_id":"x","emoji":"👍"}}]}"#,
    );
    assert!(run(&reaction).unwrap().is_empty());
    let bad = wrap(
        r#"{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","timestamp":"soon","type":"text"}]}"#,
    );
    let err = run(&bad).unwrap_err();
    assert!(err.to_string().contains("entry[0].changes[0].value.messages[0].timestamp"), "{err}");
}

fn single_append(body: &str) -> (NormalizedUpdate, NormalizedMessage) {
    let mut updates = run(body).unwrap();
    assert_eq!(updates.len(), 1);
    let update = updates.remove(0);
    let UpdateAction::Append(m) = update.action.clone() else { panic!("{update:?}") };
    (update, m)
}

#[test]
fn a_sender_known_only_by_a_business_scoped_id() {
    // The id on the contact (as in netflie's test payload) or on the message itself.
    let on_contact = wrap(
        r#"{"metadata":{"phone_number_id":"P","display_phone_number":"15550001111"},
            "contacts":[{"profile":{"name":"Ann"},"user_id":"US.1349"}],
            "messages":[{"id":"w1","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
    );
    let (update, m) = single_append(&on_contact);
    assert_eq!(m.sender.id.as_deref(), Some("US.1349"));
    assert_eq!(m.sender.display_name.as_deref(), Some("Ann"));
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(update.thread.key.as_deref(), Some("US.1349"));
    let on_message = wrap(
        r#"{"metadata":{"phone_number_id":"P"},
            "contacts":[{"profile":{"name":"Bo"},"user_id":"US.2"},{"profile":{"name":"Ann"},"user_id":"US.1"}],
            "messages":[{"from_user_id":"US.1","id":"w2","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
    );
    let (update, m) = single_append(&on_message);
    assert_eq!((m.sender.id.as_deref(), m.sender.display_name.as_deref()), (Some("US.1"), Some("Ann")));
    assert_eq!(update.thread.key.as_deref(), Some("US.1"));
    // A phone number, when there is one, stays the sender and the thread.
    let both = wrap(
        r#"{"metadata":{"phone_number_id":"P"},"contacts":[{"wa_id":"4917","user_id":"DE.9"}],
            "messages":[{"from":"4917","from_user_id":"DE.9","id":"w3","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
    );
    let (update, m) = single_append(&both);
    assert_eq!((m.sender.id.as_deref(), update.thread.key.as_deref()), (Some("4917"), Some("4917")));
    // No id at all: the message cannot be attributed.
    let none = wrap(
        r#"{"metadata":{"phone_number_id":"P"},"messages":[{"id":"w4","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
    );
    assert_eq!(run(&none).unwrap_err().reason_code(), "missing_field");
    // Statuses for such a user name its thread by that id.
    let status = wrap(
        r#"{"metadata":{"phone_number_id":"P"},"statuses":[{"id":"w5","status":"read","timestamp":"1","recipient_user_id":"US.1"}]}"#,
    );
    assert_eq!(run(&status).unwrap()[0].thread.key.as_deref(), Some("US.1"));
}

#[test]
fn numbers_without_digits_are_never_our_own() {
    assert!(same_number("+1 555-000 1111", "15550001111"));
    assert!(!same_number("PHONE_NUMBER", "PHONE_NUMBER"), "placeholders would all match");
    let placeholders = wrap(
        r#"{"metadata":{"phone_number_id":"P","display_phone_number":"PHONE_NUMBER"},
            "messages":[{"from":"PHONE_NUMBER","id":"w","timestamp":"1","type":"text","text":{"body":"hi"}}]}"#,
    );
    assert_eq!(single_append(&placeholders).1.direction, Direction::Inbound);
}

#[test]
fn requires_phone_number_id_and_known_object() {
    let value = wrap(r#"{"messages":[{"from":"1","id":"w","timestamp":"1","type":"text","text":{"body":"x"}}]}"#);
    assert_eq!(run(&value).unwrap_err().reason_code(), "missing_field");
    let err = run(r#"{"object":"page","entry":[]}"#).unwrap_err();
    assert_eq!(err.reason_code(), "unsupported_event");
    let err = run(r#"{"entry":[]}"#).unwrap_err();
    assert!(err.to_string().contains("missing field `object`"), "{err}");
}

#[test]
fn unknown_types_get_a_placeholder_body() {
    let value = wrap(
        r#"{"metadata":{"phone_number_id":"P"},"messages":[{"from":"1","id":"w","timestamp":1,"type":"unsupported",
            "errors":[{"code":131051,"title":"Message type unknown"}]}]}"#,
    );
    let updates = run(&value).unwrap();
    let UpdateAction::Append(m) = &updates[0].action else { panic!() };
    assert_eq!(m.body, "[WhatsApp message of type `unsupported`: Message type unknown]");
}

#[test]
fn a_bad_item_fails_alone_item_by_item() {
    // A good text, a text with a bad time, a status with a bad time, then a change for a
    // number without phone_number_id, and a good status.
    let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"metadata":{"phone_number_id":"P"},
              "messages":[{"from":"1","id":"ok","timestamp":"1","type":"text","text":{"body":"hi"}},
                          {"from":"1","id":"bad","timestamp":"soon","type":"text","text":{"body":"hi"}}],
              "statuses":[{"id":"s0","status":"read","timestamp":"later","recipient_id":"1"}]}},
            {"field":"messages","value":{"metadata":{},
              "messages":[{"from":"1","id":"lost","timestamp":"1","type":"text","text":{"body":"hi"}}]}},
            {"field":"messages","value":{"metadata":{"phone_number_id":"P"},
              "statuses":[{"id":"s1","status":"read","timestamp":"2","recipient_id":"1"}]}}]}]}"#;
    let delivery = Delivery {
        body: body.as_bytes(),
        headers: &Default::default(),
        external_channel_id: None,
        received_at: chrono::Utc::now(),
    };
    let items = decode_items(body.as_bytes(), &delivery, &WhatsAppConfig::default()).unwrap();
    let errors: Vec<String> = items.iter().filter_map(|i| i.as_ref().err().map(|e| e.to_string())).collect();
    assert_eq!(items.len(), 5, "{items:?}");
    assert!(errors[0].contains("changes[0].value.messages[1].timestamp"), "{errors:?}");
    assert!(errors[1].contains("changes[0].value.statuses[0].timestamp"), "{errors:?}");
    assert!(errors[2].contains("changes[1].value.metadata.phone_number_id"), "{errors:?}");
    let keys: Vec<&str> = items.iter().filter_map(|i| i.as_ref().ok()).map(|u| u.idempotency_key()).collect();
    assert_eq!(keys, ["wa:ok", "wa:s1"]);
    // All or nothing through `decode`: the first error.
    assert_eq!(run(body).unwrap_err().to_string(), errors[0]);
}
