//! Unlabeled 8-bit text in mails: raw GB2312, Shift_JIS or Latin-1 bytes in header fields and
//! in text parts without a charset are decoded as a browser would (chardetng), valid UTF-8
//! stays as it is.

mod corpus;
mod support;

use intake_adapters::NormalizedMessage;
use support::{decode, fixture, message};

fn from_name(m: &NormalizedMessage) -> Option<&str> {
    m.metadata.get("from")?.get("name")?.as_str()
}

#[test]
fn raw_gb2312_subject_sender_and_body() {
    let update = decode(&fixture("intake_unlabeled_8bit_gb2312.eml"));
    let m = message(&update);
    assert_eq!(m.subject.as_deref(), Some("关于发票的问题：请尽快回复"));
    assert_eq!(m.sender.display_name.as_deref(), Some("王小明"));
    assert_eq!(from_name(m), Some("王小明"));
    assert_eq!(m.sender.id.as_deref(), Some("sender@customer.example"));
    assert!(m.body.contains("我上个月的发票还没有收到"), "{}", m.body);
    assert!(!m.body.contains('\u{FFFD}'));
}

#[test]
fn raw_shift_jis_subject_sender_and_body() {
    let update = decode(&fixture("intake_unlabeled_8bit_shift_jis.eml"));
    let m = message(&update);
    assert_eq!(m.subject.as_deref(), Some("パスワード再設定ツールについて"));
    assert_eq!(m.sender.display_name.as_deref(), Some("山田太郎"));
    assert!(m.body.contains("パスワード再設定ツールが動作しません。"), "{}", m.body);
}

#[test]
fn valid_utf8_headers_and_body_stay_as_they_are() {
    let raw = "From: \"Zoë Ünal\" <zoe@example.com>\r\nTo: support@example.com\r\nSubject: Grüße, 转发 ツール\r\n\
               Message-ID: <utf8@example.com>\r\n\r\nnaïve café 漢字\r\n";
    let m = decode(raw.as_bytes());
    let m = message(&m);
    assert_eq!(m.subject.as_deref(), Some("Grüße, 转发 ツール"));
    assert_eq!(m.sender.display_name.as_deref(), Some("Zoë Ünal"));
    assert_eq!(m.body.trim_end(), "naïve café 漢字");
}

#[test]
fn raw_latin1_attachment_name_and_unlabeled_latin1_body() {
    let raw = b"From: a@example.com\r\nTo: support@example.com\r\nSubject: Schaden\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
        Der Wasserschaden in der K\xfcche ist gr\xf6\xdfer geworden.\r\n--b\r\n\
        Content-Type: image/jpeg\r\nContent-Disposition: attachment; filename=\"K\xfcche.jpg\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--b--\r\n";
    let update = decode(raw);
    let m = message(&update);
    assert_eq!(m.body.trim_end(), "Der Wasserschaden in der Küche ist größer geworden.");
    assert_eq!(m.attachments[0].filename.as_deref(), Some("Küche.jpg"));
}

#[test]
fn a_known_charset_label_is_used_as_labelled() {
    // Labelled windows-1252: mail-parser's own decoder, no guessing.
    let raw = b"From: a@example.com\r\nSubject: x\r\nContent-Type: text/plain; charset=windows-1252\r\n\r\n\x93quoted\x94\r\n";
    assert_eq!(message(&decode(raw)).body.trim_end(), "\u{201c}quoted\u{201d}");
}

#[test]
fn zammad_mail046_gb2312_subject_and_sender() {
    let Some(raw) = corpus::read("email/zammad/mail046.box") else { return };
    let update = decode(&raw);
    let m = message(&update);
    assert_eq!(m.subject.as_deref(), Some("转发：整体提升企业服务水平"));
    // Zammad's own expectation (`ÎäŔźłÉ`) is these GB2312 bytes read as windows-1250.
    assert_eq!(from_name(m), Some("武兰成"));
    assert_eq!(m.sender.id.as_deref(), Some("glopelf7121@example.com"));
}

#[test]
fn zammad_mail093_shift_jis_subject_and_mislabelled_sender() {
    let Some(raw) = corpus::read("email/zammad/mail093.box") else { return };
    let m = decode(&raw);
    let m = message(&m);
    assert_eq!(m.subject.as_deref(), Some("ツール"));
    // From is an encoded word labelled ISO-2022-JP that holds Shift_JIS bytes.
    assert_eq!(from_name(m), Some("ツール EXAMPLE"));
    assert_eq!(m.sender.id.as_deref(), Some("bar@example.org"));
}

#[test]
fn zammad_raw_8bit_attachment_names() {
    for (file, expected) in [
        ("email/zammad/mail015.box", "绩效管理,究竟谁错了.xls"),
        ("email/zammad/mail057.box", "Hofjägeralle Wasserschaden.jpg"),
    ] {
        let Some(raw) = corpus::read(file) else { return };
        let update = decode(&raw);
        let names: Vec<_> = message(&update).attachments.iter().filter_map(|a| a.filename.as_deref()).collect();
        assert!(names.contains(&expected), "{file}: {names:?}");
    }
}

/// Pieces of header values around the repair's edge cases: encoded words (well-formed, cut
/// off, mislabelled), raw 8-bit bytes, quotes and address syntax.
fn header_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        Just(b"=?ISO-2022-JP?B?g2OBW4OLIEVYQU1QTEU=?=".to_vec()),
        Just(b"=?iso-2022-jp?Q?=83e=83X_=83g?=".to_vec()),
        Just(b"=?iso-8859-1?Q?Fr\xf6sche?=".to_vec()),
        Just(b"=?utf-8?B?".to_vec()),
        Just(b"?=".to_vec()),
        Just(b"=?".to_vec()),
        Just(b"\"".to_vec()),
        Just(b", <a@example.com>".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\r\n ".to_vec()),
        proptest::collection::vec(0x80u8..=0xff, 1..6),
        "[a-zA-Z=_?*]{1,6}".prop_map(String::into_bytes),
    ]
}

proptest::proptest! {
    #[test]
    fn repairing_any_header_never_panics(
        subject in proptest::collection::vec(header_piece(), 0..8),
        from in proptest::collection::vec(header_piece(), 0..8),
    ) {
        let mut raw = b"From: ".to_vec();
        raw.extend(from.concat());
        raw.extend_from_slice(b"\r\nSubject: ");
        raw.extend(subject.concat());
        raw.extend_from_slice(b"\r\nTo: support@example.com\r\n\r\nbody\r\n");
        let headers = intake_adapters::Headers::new();
        let delivery = intake_adapters::Delivery {
            body: &raw,
            headers: &headers,
            external_channel_id: None,
            received_at: support::received_at(),
        };
        let updates = intake_adapters::email::decode(&delivery, &intake_adapters::email::EmailConfig::default());
        proptest::prop_assert!(updates.is_ok(), "{updates:?}");
    }
}

#[test]
fn a_header_full_of_encoded_word_starts_decodes_quickly() {
    for piece in [&b"=?a?b?x"[..], b"=?iso-2022-jp?b?gg==?= ", b"\xe4=?"] {
        let mut raw = b"From: a@example.com\r\nSubject: ".to_vec();
        while raw.len() < 512 * 1024 {
            raw.extend_from_slice(piece);
        }
        raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        let started = std::time::Instant::now();
        let m = support::decode_message(&raw);
        assert!(m.subject.is_some());
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
