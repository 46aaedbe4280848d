//! Every Slack, Telegram, WhatsApp and Twilio payload of the shared corpus (see its
//! `ORIGINS.md`) through its adapter, with what each must decode to. A payload that errors is
//! listed with the reason a real product would refuse it too. Skipped without the corpus.

mod corpus;

use intake_adapters::chat::{slack, telegram, twilio, whatsapp};
use intake_adapters::{AdapterError, Delivery, Direction, Headers, NormalizedUpdate, UpdateAction};

/// The entry point the publisher names for Twilio posts (Chatwoot's minimal posts have no `To`).
const TWILIO_ENVELOPE: &str = "+15550001111";

fn decode(folder: &str, body: &[u8]) -> Result<Vec<NormalizedUpdate>, AdapterError> {
    let headers = Headers::new();
    let envelope = (folder == "twilio").then_some(TWILIO_ENVELOPE);
    let received_at = "2030-01-01T00:00:00Z".parse().expect("fixed time");
    let delivery = Delivery { body, headers: &headers, external_channel_id: envelope, received_at };
    match folder {
        "slack" => slack::decode(body, &delivery, &Default::default()),
        "telegram" => telegram::decode(body, &delivery, &Default::default()),
        "whatsapp" => whatsapp::decode(body, &delivery, &Default::default()),
        "twilio" => twilio::decode(body, &delivery, &Default::default()),
        other => panic!("no adapter for {other}"),
    }
}

/// One line per update: what it does, to which key, and for appends who sent it where.
fn summary(result: &Result<Vec<NormalizedUpdate>, AdapterError>) -> Vec<String> {
    let updates = match result {
        Err(e) => return vec![format!("error {}", e.reason_code())],
        Ok(updates) => updates,
    };
    updates
        .iter()
        .map(|u| match &u.action {
            UpdateAction::Append(m) => format!(
                "append {} {} from {} in {}",
                m.idempotency_key,
                if m.direction == Direction::Inbound { "in" } else { "out" },
                m.sender.id.as_deref().unwrap_or("-"),
                u.thread.key.as_deref().unwrap_or("-"),
            ),
            UpdateAction::Edit { idempotency_key, .. } => format!("edit {idempotency_key}"),
            UpdateAction::Delete { idempotency_key, .. } => format!("delete {idempotency_key}"),
            UpdateAction::Status { idempotency_key, status, .. } => format!("status {idempotency_key} {status}"),
        })
        .collect()
}

/// What each corpus payload decodes to. Notes on the less obvious ones:
/// - Slack: bolt-python's anonymised ids make the app's own bot user (`authorizations[]`,
///   `is_bot`) the author of some messages, which are therefore outbound; `message_changed`
///   without `message.ts` edits `previous_message.ts`; unchanged-text edits, joins and
///   reactions are nothing to apply; a non-Slack payload (`zulip_NOT_SLACK_…`) is refused;
/// - Telegram: a getUpdates response is not a webhook body (refused); channel posts, callback
///   queries, dice, stories and service messages are nothing to apply; an anonymous group admin
///   (`GroupAnonymousBot`) writes as the group, inbound;
/// - WhatsApp: a sender with only a business-scoped user id is that id; placeholder numbers
///   (`PHONE_NUMBER`) are not taken for the business's own;
/// - Twilio: Chatwoot's posts without `To` use the envelope's number.
const EXPECTED: &[(&str, &[&str])] = &[
    ("slack/bolt-python_app_mention_shared_channel.json", &[]),
    ("slack/bolt-python_member_joined_channel_NONMESSAGE.json", &[]),
    (
        "slack/bolt-python_message_bot_message_classic.json",
        &["append slack:C111:1610262363.001600 out from B888 in C111:1610262363.001600"],
    ),
    (
        "slack/bolt-python_message_bot_message_response_url.json",
        &["append slack:C111:1658282075.825129 out from BZYBOTHED in C111:1658282075.825129"],
    ),
    ("slack/bolt-python_message_changed.json", &["edit slack:C111:1665102338.901939"]),
    ("slack/bolt-python_message_changed_assistant_thread_parent.json", &[]),
    ("slack/bolt-python_message_changed_thread_parent_channel.json", &[]),
    ("slack/bolt-python_message_deleted.json", &["delete slack:C111:1665368619.804829"]),
    (
        "slack/bolt-python_message_file_share.json",
        &["append slack:C111:1652227646.593159 in from U111 in C111:1652227646.593159"],
    ),
    (
        "slack/bolt-python_message_file_share_2.json",
        &["append slack:G111:1610493715.001000 out from U111 in G111:1610493715.001000"],
    ),
    (
        "slack/bolt-python_message_from_app_bot_no_subtype.json",
        &["append slack:C111:1610261539.000900 out from UB111 in C111:1610261539.000900"],
    ),
    (
        "slack/bolt-python_message_org_app_enterprise.json",
        &["append slack:C111:1606810819.000800 in from W111 in C111:1606810819.000800"],
    ),
    (
        "slack/bolt-python_message_plain_apostrophe.json",
        &["append slack:C111:1596183880.004200 in from W111 in C111:1596183880.004200"],
    ),
    (
        "slack/bolt-python_message_plain_hello.json",
        &["append slack:C111:1596183880.004200 in from W111 in C111:1596183880.004200"],
    ),
    (
        "slack/bolt-python_message_plain_ticket_ids.json",
        &["append slack:C111:1596183880.004200 in from W111 in C111:1596183880.004200"],
    ),
    (
        "slack/bolt-python_message_thread_broadcast.json",
        &["append slack:C111:1633670813.007500 in from U111 in C111:1633663824.000500"],
    ),
    (
        "slack/bolt-python_message_thread_reply_channel.json",
        &["append slack:C111:1726133700.887259 in from W222 in C111:1726133698.626339"],
    ),
    (
        "slack/bolt-python_message_thread_reply_im.json",
        &["append slack:D111:1726133700.887259 in from W222 in D111:1726133698.626339"],
    ),
    (
        "slack/bolt-python_message_user_with_attachments.json",
        &["append slack:C111:1610261659.001400 out from W111 in C111:1610261659.001400"],
    ),
    ("slack/bolt-python_reaction_added_NONMESSAGE.json", &[]),
    ("slack/zulip_NOT_SLACK_anomalous_payload.json", &["error malformed_payload"]),
    ("slack/zulip_app_rate_limited_NONMESSAGE.json", &[]),
    (
        "slack/zulip_message_from_slack_bridge_bot.json",
        &["append slack:C06NRA6JLER:1718856814.111759 out from U074G5E1ANR in C06NRA6JLER:1718856814.111759"],
    ),
    (
        "slack/zulip_message_from_slack_integration_bot.json",
        &["append slack:C06P6T3QGD7:1723609070.703489 out from B06NWMNUQ3W in C06P6T3QGD7:1723609070.703489"],
    ),
    (
        "slack/zulip_message_with_complex_formatted_mentions.json",
        &["append slack:C06NRA6JLER:1719211546.331399 in from U06NU4E26M9 in C06NRA6JLER:1719211546.331399"],
    ),
    (
        "slack/zulip_message_with_inaccessible_file.json",
        &["append slack:C06NRA6JLER:1719209815.105159 in from U06NU4E26M9 in C06NRA6JLER:1719209815.105159"],
    ),
    (
        "slack/zulip_message_with_normal_text.json",
        &["append slack:C06NRA6JLER:1719209506.817929 in from U06NU4E26M9 in C06NRA6JLER:1719209506.817929"],
    ),
    (
        "slack/zulip_message_with_quote_block.json",
        &["append slack:C06NRA6JLER:1719211959.210699 in from U06NU4E26M9 in C06NRA6JLER:1719211959.210699"],
    ),
    (
        "slack/zulip_message_with_variety_files.json",
        &["append slack:C06NRA6JLER:1719209815.105159 in from U06NU4E26M9 in C06NRA6JLER:1719209815.105159"],
    ),
    ("slack/zulip_url_verification_challenge.json", &[]),
    ("telegram/telegrambots_GETUPDATES_ENVELOPE_write_access_allowed.json", &["error malformed_payload"]),
    ("telegram/telegrambots_callback_query_with_message_keyboard.json", &[]),
    (
        "telegram/telegrambots_update_MULTIKIND_message_edited_inline_callback.json",
        &["append telegram:1111111:1365 in from 1111111 in 1111111"],
    ),
    (
        "telegram/teloxide-msg-wrapped_forum_topic_message.json",
        &["append telegram:-1001847508954:5 in from 1253681278 in -1001847508954"],
    ),
    (
        "telegram/teloxide-msg-wrapped_forwarded_from_channel.json",
        &["append telegram:-1001160242915:1 in from -1001160242915 in -1001160242915"],
    ),
    (
        "telegram/teloxide-msg-wrapped_media_group_forwarded.json",
        &["append telegram:250918540:198283 in from 250918540 in 250918540"],
    ),
    ("telegram/teloxide-msg-wrapped_photo.json", &["append telegram:250918540:199791 in from 250918540 in 250918540"]),
    (
        "telegram/teloxide-msg-wrapped_photo_caption_entities.json",
        &["append telegram:27433968:3460 in from 27433968 in 27433968"],
    ),
    (
        "telegram/teloxide-msg-wrapped_sticker.json",
        &["append telegram:250918540:199787 in from 250918540 in 250918540"],
    ),
    (
        "telegram/teloxide-msg-wrapped_video_forwarded.json",
        &["append telegram:250918540:198283 in from 250918540 in 250918540"],
    ),
    ("telegram/teloxide_update_UNKNOWN_KIND.json", &[]),
    ("telegram/teloxide_update_dice.json", &[]),
    ("telegram/teloxide_update_issue_1107_a.json", &[]),
    (
        "telegram/teloxide_update_issue_1107_b.json",
        &["append telegram:-1001293752024:134546 in from 5964236329 in -1001293752024"],
    ),
    (
        "telegram/teloxide_update_message_group_text.json",
        &["append telegram:218485655:6557 in from 218485655 in 218485655"],
    ),
    ("telegram/teloxide_update_message_reaction_NONMESSAGE.json", &[]),
    ("telegram/teloxide_update_my_chat_member_NONMESSAGE.json", &[]),
    ("telegram/teloxide_update_pinned_message_service.json", &[]),
    ("telegram/teloxide_update_private_text.json", &["append telegram:408258968:154 in from 408258968 in 408258968"]),
    ("telegram/teloxide_update_purchased_paid_media_NONMESSAGE.json", &[]),
    ("telegram/zammad_channel_document.json", &[]),
    ("telegram/zammad_channel_text.json", &[]),
    ("telegram/zammad_channel_voice.json", &[]),
    ("telegram/zammad_private_document.json", &["append telegram:111111:2 in from 111111 in 111111"]),
    ("telegram/zammad_private_photo.json", &["append telegram:111111:3 in from 111111 in 111111"]),
    ("telegram/zammad_private_sticker_as_channel_post_ODD.json", &[]),
    ("telegram/zammad_private_text.json", &["append telegram:111111:5 in from 111111 in 111111"]),
    ("telegram/zammad_private_video.json", &["append telegram:111111:6 in from 111111 in 111111"]),
    (
        "whatsapp/netflie_MULTI_two_text_messages_one_webhook.json",
        &[
            "append wa:wamid.ID in from PHONE_NUMBER in PHONE_NUMBER",
            "append wa:wamid.ID in from PHONE_NUMBER in PHONE_NUMBER",
        ],
    ),
    (
        "whatsapp/netflie_interactive_list_reply.json",
        &["append wa:wamid.ID in from PHONE_NUMBER_ID in PHONE_NUMBER_ID"],
    ),
    ("whatsapp/netflie_message_bsuid_only_no_from.json", &["append wa:wamid.ID in from BSUID_123 in BSUID_123"]),
    (
        "whatsapp/netflie_message_without_contact_profile.json",
        &["append wa:wamid.ID in from PHONE_NUMBER in PHONE_NUMBER"],
    ),
    ("whatsapp/netflie_reaction_removed.json", &[]),
    ("whatsapp/netflie_status_failed_with_errors.json", &["status wa:amid.ID failed"]),
    ("whatsapp/netflie_unknown_message_type.json", &["append wa:wamid.ID in from PHONE_NUMBER in WHATSAPP_ID"]),
    (
        "whatsapp/pywa_callback_button__quick_reply.json",
        &["append wa:wamid.xsidjw in from 972987654321 in 972987654321"],
    ),
    (
        "whatsapp/pywa_callback_selection__callback.json",
        &["append wa:wamid.zyzxyz in from 972987654321 in 972987654321"],
    ),
    ("whatsapp/pywa_deleted_message__revoke.json", &["delete wa:<ORIGINAL_WHATSAPP_MESSAGE_ID>"]),
    (
        "whatsapp/pywa_edited_message__image.json",
        &["edit wa:wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="],
    ),
    ("whatsapp/pywa_message__contacts.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__current_location.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__document.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__forwarded.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__image.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    (
        "whatsapp/pywa_message__interactive_message_with_err.json",
        &["append wa:wamid.wegrchytvwcggt= in from 972987654321 in 972987654321"],
    ),
    ("whatsapp/pywa_message__order.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__reaction.json", &[]),
    ("whatsapp/pywa_message__referral.json", &["append wa:wamid.ID in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__reply.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__static_sticker.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__text.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message__unsupported.json", &["append wa:wamid.xyzxyz in from 972987654321 in 972987654321"]),
    ("whatsapp/pywa_message_status__delivered.json", &["status wa:wamid.xyzxyz delivered"]),
    ("whatsapp/pywa_message_status__failed.json", &["status wa:wamid.xyzxyz failed"]),
    ("whatsapp/pywa_message_status__group.json", &["status wa:<WHATSAPP_MESSAGE_ID> read"]),
    ("whatsapp/pywa_message_status__read.json", &["status wa:wamid.xyzxyz read"]),
    ("whatsapp/pywa_message_status__sent.json", &["status wa:wamid.xyzxyz sent"]),
    ("whatsapp/pywa_system__identity_change.json", &[]),
    (
        "twilio/bphone_real_inbound_sms_international.form",
        &["append twilio:SM611ee99843c7c1706e8e5a0366599e96 in from +16692310573 in +16692310573"],
    ),
    ("twilio/chatwoot_inbound_media_url_internal_host.form", &["append twilio:SMxx in from +12345 in +12345"]),
    ("twilio/chatwoot_inbound_no_body_param.form", &["append twilio:SMxx in from +12345 in +12345"]),
    ("twilio/chatwoot_inbound_null_bytes_in_body.form", &["append twilio:SMxx in from +12345 in +12345"]),
    ("twilio/chatwoot_inbound_two_media.form", &["append twilio:SMxx in from +12345 in +12345"]),
    ("twilio/chatwoot_inbound_whatsapp_location_no_body.form", &["append twilio:SMxx in from +12345 in +12345"]),
    ("twilio/chatwoot_inbound_whatsapp_profilename.form", &["append twilio:SMxx in from +1234567890 in +1234567890"]),
    ("twilio/chatwoot_status_delivered.form", &["status twilio:SMd560ac79e4a4d36b3ce59f1f50471986 delivered"]),
    (
        "twilio/chatwoot_status_failed_30008_no_message.form",
        &["status twilio:SMd560ac79e4a4d36b3ce59f1f50471986 failed"],
    ),
    (
        "twilio/chatwoot_status_failed_30008_with_message.form",
        &["status twilio:SMd560ac79e4a4d36b3ce59f1f50471986 failed"],
    ),
    ("twilio/chatwoot_status_read.form", &["status twilio:SMd560ac79e4a4d36b3ce59f1f50471986 read"]),
    (
        "twilio/smartstops_real_inbound_sms_no_NumMedia.form",
        &["append twilio:SM26112da2601e1ad91a7dc68c887a80c2 in from +14153074175 in +14153074175"],
    ),
    (
        "twilio/zammad_inbound_sms1.form",
        &["append twilio:SM1bd5330f81336e8b54c2d3d9fc1bcb6a in from +491710000000 in +491710000000"],
    ),
    (
        "twilio/zammad_inbound_sms2.form",
        &["append twilio:SM1bd5330f81336e8b54c2d3d9fc1bcb6b in from +491710000000 in +491710000000"],
    ),
    (
        "twilio/zammad_inbound_sms3.form",
        &["append twilio:SM1bd5330f81336e8b54c2d3d9fc1bcb6c in from +491710000000 in +491710000000"],
    ),
    (
        "twilio/zammad_inbound_sms4_mms_empty_body.form",
        &["append twilio:SM1bd5330f81336e8b54c2d3d9fc1bcb6a in from +491710000000 in +491710000000"],
    ),
];

#[test]
fn every_corpus_payload_decodes_as_expected() {
    let mut seen = 0;
    for folder in ["slack", "telegram", "whatsapp", "twilio"] {
        let Some(files) = corpus::files(folder, "") else { return };
        for (name, body) in files.iter().filter(|(n, _)| n.ends_with(".json") || n.ends_with(".form")) {
            let path = format!("{folder}/{name}");
            let result = std::panic::catch_unwind(|| decode(folder, body));
            let result = result.unwrap_or_else(|_| panic!("{path}: the adapter panicked"));
            let expected = EXPECTED.iter().find(|(p, _)| *p == path).map(|(_, e)| *e);
            let expected =
                expected.unwrap_or_else(|| panic!("{path} is not listed; it decodes to {:?}", summary(&result)));
            assert_eq!(summary(&result), expected, "{path}");
            seen += 1;
        }
    }
    assert_eq!(seen, EXPECTED.len(), "a listed payload is missing from the corpus");
}

#[test]
fn the_bolt_python_edit_without_ts_keeps_its_new_text() {
    let Some(body) = corpus::read("slack/bolt-python_message_changed.json") else { return };
    let updates = decode("slack", &body).expect("decodes");
    let UpdateAction::Edit { body, .. } = &updates[0].action else { panic!("{updates:?}") };
    assert_eq!(body, "updated message");
}

#[test]
fn the_bsuid_only_whatsapp_sender_keeps_its_profile_name() {
    let Some(body) = corpus::read("whatsapp/netflie_message_bsuid_only_no_from.json") else { return };
    let updates = decode("whatsapp", &body).expect("decodes");
    let UpdateAction::Append(m) = &updates[0].action else { panic!("{updates:?}") };
    assert_eq!(m.sender.display_name.as_deref(), Some("NAME"));
    assert_eq!(m.body, "MESSAGE_BODY");
}
