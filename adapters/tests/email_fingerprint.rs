//! The email adapter's content fingerprint: the same mail relayed through more MTAs keeps it,
//! another mail that reuses a Message-ID does not.

mod corpus;
mod support;

use intake_adapters::content_fingerprint;
use support::{decode_message, fixture};

const MAIL: &str = "From: Ann <Ann@Customer.example>\r\nTo: support@example.com\r\nSubject: Printer on fire\r\n\
                    Date: Fri, 4 May 2012 14:01:03 +0200\r\nMessage-ID: <one@customer.example>\r\n\r\nHelp!\r\n";

#[test]
fn the_fingerprint_is_set_and_uses_the_date_as_written() {
    let m = decode_message(MAIL.as_bytes());
    let expected = content_fingerprint(&m, Some("Fri, 4 May 2012 14:01:03 +0200"));
    assert_eq!(m.fingerprint.as_deref(), Some(expected.as_str()));
    assert_ne!(expected, content_fingerprint(&m, None), "the Date counts");
}

#[test]
fn extra_received_headers_and_refolding_keep_the_fingerprint() {
    let original = decode_message(MAIL.as_bytes());
    let relayed = format!(
        "Received: from mx2.example.net by mx1.example.com with ESMTP id 1; Fri, 4 May 2012 14:01:09 +0200\r\n\
         Received: from mail.customer.example by mx2.example.net; Fri, 4 May 2012 14:01:05 +0200\r\n{}",
        MAIL.replace("Date: Fri, 4 May 2012 14:01:03", "Date: Fri, 4 May 2012\r\n  14:01:03")
    );
    let relayed = decode_message(relayed.as_bytes());
    assert_eq!(relayed.idempotency_key, original.idempotency_key);
    assert_eq!(relayed.fingerprint, original.fingerprint);
    for fixture_name in ["tb_sample02_latin1_qp_attachments.eml", "lkml_gb2312_outlook_reply.eml"] {
        let raw = fixture(fixture_name);
        let mut with_hop =
            b"Received: from relay.example.net by mx.example.com; Thu, 1 Jan 2026 00:00:00 +0000\r\n".to_vec();
        with_hop.extend_from_slice(&raw);
        assert_eq!(decode_message(&with_hop).fingerprint, decode_message(&raw).fingerprint, "{fixture_name}");
    }
}

#[test]
fn another_mail_reusing_the_message_id_has_another_fingerprint() {
    let original = decode_message(MAIL.as_bytes());
    for changed in [
        MAIL.replace("Help!", "Help, again!"),
        MAIL.replace("Printer on fire", "Printer still on fire"),
        MAIL.replace("Ann@Customer.example", "bob@customer.example"),
        MAIL.replace("14:01:03", "14:01:04"),
    ] {
        let other = decode_message(changed.as_bytes());
        assert_eq!(other.idempotency_key, original.idempotency_key);
        assert_ne!(other.fingerprint, original.fingerprint, "{changed}");
    }
}

#[test]
fn without_a_date_the_fingerprint_has_no_time() {
    let raw = MAIL.replace("Date: Fri, 4 May 2012 14:01:03 +0200\r\n", "");
    let m = decode_message(raw.as_bytes());
    assert_eq!(m.fingerprint.as_deref(), Some(content_fingerprint(&m, None).as_str()));
}

#[test]
fn zammad_mails_sharing_one_message_id_have_three_fingerprints() {
    let mut seen = Vec::new();
    for file in ["email/zammad/mail050.box", "email/zammad/mail060.box", "email/zammad/mail077.box"] {
        let Some(raw) = corpus::read(file) else { return };
        seen.push(decode_message(&raw));
    }
    assert!(seen.iter().all(|m| m.idempotency_key == "BC182994-03FA-4DC5-8202-98CBFACA0887@example.com"));
    let fingerprints: std::collections::HashSet<_> = seen.iter().map(|m| m.fingerprint.clone().expect("set")).collect();
    assert_eq!(fingerprints.len(), 3, "{fingerprints:?}");
}
