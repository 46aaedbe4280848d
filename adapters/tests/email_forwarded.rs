//! Forwarded messages (`message/rfc822` parts) without a file name of their own are named
//! `<inner Subject>.eml`, as mail clients (and Zammad) name them when saving.

mod corpus;
mod support;

use support::{attachment_names, decode_message};

fn mail_with_forwarded(part_headers: &str, inner: &str) -> Vec<u8> {
    format!(
        "From: ann@customer.example\r\nTo: support@example.com\r\nSubject: Fwd: see below\r\n\
         Message-ID: <outer@customer.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=outer\r\n\r\n\
         --outer\r\nContent-Type: text/plain\r\n\r\nSee the forwarded mail.\r\n\
         --outer\r\n{part_headers}\r\n{inner}\r\n--outer--\r\n"
    )
    .into_bytes()
}

const INNER: &str =
    "From: bob@example.org\r\nSubject: Invoice 42 / March\r\nMessage-ID: <inner@example.org>\r\n\r\nPlease pay.\r\n";

#[test]
fn a_forwarded_message_is_named_after_its_subject() {
    let m = decode_message(&mail_with_forwarded("Content-Type: message/rfc822\r\n", INNER));
    assert_eq!(attachment_names(&m), ["Invoice 42 _ March.eml"]);
    assert_eq!(m.attachments[0].content_type.as_deref(), Some("message/rfc822"));
}

#[test]
fn its_own_file_name_wins() {
    let headers = "Content-Type: message/rfc822; name=\"original.eml\"\r\nContent-Disposition: attachment; filename=\"original.eml\"\r\n";
    let m = decode_message(&mail_with_forwarded(headers, INNER));
    assert_eq!(attachment_names(&m), ["original.eml"]);
}

#[test]
fn without_a_subject_the_fallback_name() {
    let inner = "From: bob@example.org\r\nMessage-ID: <inner@example.org>\r\n\r\nNo subject here.\r\n";
    let m = decode_message(&mail_with_forwarded("Content-Type: message/rfc822\r\n", inner));
    assert_eq!(attachment_names(&m), ["forwarded-message.eml"]);
    let blank = "From: bob@example.org\r\nSubject:  \t \r\n\r\nBlank subject.\r\n";
    let m = decode_message(&mail_with_forwarded("Content-Type: message/rfc822\r\n", blank));
    assert_eq!(attachment_names(&m), ["forwarded-message.eml"]);
}

#[test]
fn an_encoded_long_subject_is_decoded_cleaned_and_capped() {
    let subject = format!("=?UTF-8?B?{}?=", "w6TDtsO8".repeat(60)); // "äöü" x 60 = 360 bytes
    let inner = format!("From: bob@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n");
    let m = decode_message(&mail_with_forwarded("Content-Type: message/rfc822\r\n", &inner));
    let name = &attachment_names(&m)[0];
    assert!(name.ends_with(".eml") && name.starts_with("äöüäöü"), "{name}");
    assert!(name.len() <= 255, "{} bytes", name.len());
}

#[test]
fn a_base64_forwarded_message_with_a_raw_gb2312_subject() {
    use base64::Engine as _;
    // 转发：发票 in GB2312, raw in the forwarded message's Subject.
    let inner = b"From: bob@example.org\r\nSubject: \xd7\xaa\xb7\xa2\xa3\xba\xb7\xa2\xc6\xb1\r\n\r\nbody\r\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(inner);
    let raw = mail_with_forwarded("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n", &encoded);
    assert_eq!(attachment_names(&decode_message(&raw)), ["转发：发票.eml"]);
}

#[test]
fn zammad_forwarded_message_names() {
    for (file, expected) in [
        (
            "email/zammad/mail014.box",
            &["Neue Anfrage erstellt - 33284.eml", "Call: HW-Anforderung; Best-nr.47524152.eml"][..],
        ),
        ("email/zammad/mail046.box", &["转发：整体提升企业服务水平.eml"]),
        ("email/zammad/mail069.box", &["Online-apotheke. Günstigster Preis. Ohne Rezepte.eml"]),
        // An empty forwarded message: its Content-Description names it.
        ("email/zammad/mail092.box", &["Undelivered Message.eml"]),
    ] {
        let Some(raw) = corpus::read(file) else { return };
        let names = attachment_names(&decode_message(&raw));
        for name in expected {
            assert!(names.iter().any(|n| n == name), "{file}: {name} not in {names:?}");
        }
    }
}
