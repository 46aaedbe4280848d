//! Every mail of the shared corpus (`email/zammad/*.box` with Zammad's expected parse in
//! `*.yml`, `email/mail-parser/*.eml` with mail-parser's in `*.json`) through the email
//! adapter: none is refused, and subjects and senders match the expectations, except where an
//! expectation is itself wrong (listed, with the reason).

mod corpus;
mod support;

use intake_adapters::email::{self, EmailConfig};
use intake_adapters::{Delivery, Headers, NormalizedMessage};
use serde_json::Value;
use support::{decode_message, received_at};

/// Senders Zammad expects differently, and why.
const ZAMMAD_FROM_EXCEPTIONS: &[(&str, &str)] = &[
    ("mail046", "Zammad reads the raw GB2312 display name as windows-1250 (`ÎäŔźłÉ`); it is 武兰成"),
    ("mail053", "`From: MAILER-DAEMON (Mail Delivery System)` has no address; Zammad takes the word as one"),
    ("mail076", "`From: \"Millions Lottery Spain transfer\"@example.com>` is broken; Zammad keeps the pieces"),
    ("mail087", "`From: Test test@example.com` has no angle brackets; Zammad takes the whole as the address"),
    ("mail092", "Zammad drops the comment `(Mail Delivery System)` from the display name; we keep it"),
];

/// Subjects Zammad expects differently, and why.
const ZAMMAD_SUBJECT_EXCEPTIONS: &[(&str, &str)] = &[(
    "mail018",
    "the encoded word's charset is `unicode-1-1-utf-7`, an old UTF-7 alias Zammad leaves undecoded (`+ANw-`); it is Ü",
)];

/// One top-level scalar of a Zammad expectation file: plain, single- or double-quoted on one
/// line. `None` for a missing key or a value this small reader does not handle.
fn yml_scalar(yml: &str, key: &str) -> Option<String> {
    let line = yml.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))?;
    if let Some(inner) = line.strip_prefix('\'') {
        return Some(inner.strip_suffix('\'')?.replace("''", "'"));
    }
    if line.starts_with('"') {
        return serde_json::from_str::<String>(line).ok();
    }
    (!line.is_empty()).then(|| line.to_owned())
}

/// White space runs as one space, trimmed: folding is not content.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn from_field<'m>(m: &'m NormalizedMessage, field: &str) -> Option<&'m str> {
    m.metadata.get("from")?.get(field)?.as_str()
}

#[test]
fn every_corpus_mail_decodes() {
    for folder in ["email/zammad", "email/mail-parser"] {
        let Some(files) = corpus::files(folder, "") else { return };
        for (name, raw) in files.iter().filter(|(n, _)| n.ends_with(".box") || n.ends_with(".eml")) {
            let headers = Headers::new();
            let delivery =
                Delivery { body: raw, headers: &headers, external_channel_id: None, received_at: received_at() };
            let updates = email::decode(&delivery, &EmailConfig::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(updates.len(), 1, "{name}");
        }
    }
}

#[test]
fn zammad_subjects_and_senders() {
    let Some(files) = corpus::files("email/zammad", ".yml") else { return };
    let mut compared = 0;
    for (yml_name, yml) in &files {
        let stem = yml_name.trim_end_matches(".yml");
        let Some(raw) = corpus::read(&format!("email/zammad/{stem}.box")) else { return };
        let yml = String::from_utf8_lossy(yml);
        let m = decode_message(&raw);
        if ZAMMAD_SUBJECT_EXCEPTIONS.iter().any(|(n, _)| *n == stem) {
            assert!(!m.subject.as_deref().unwrap_or_default().contains("+ANw-"), "{stem} subject decoded");
        } else if let Some(expected) = yml_scalar(&yml, "subject") {
            assert_eq!(squeeze(m.subject.as_deref().unwrap_or_default()), squeeze(&expected), "{stem} subject");
            compared += 1;
        }
        if ZAMMAD_FROM_EXCEPTIONS.iter().any(|(n, _)| *n == stem) {
            continue;
        }
        if let Some(expected) = yml_scalar(&yml, "from_email") {
            // Without a From, Zammad takes the Reply-To, our sender too.
            let ours = from_field(&m, "address").or(m.sender.id.as_deref());
            assert_eq!(ours, Some(expected.to_lowercase().as_str()), "{stem} from_email");
        }
        if let Some(expected) = yml_scalar(&yml, "from_display_name") {
            let ours = from_field(&m, "name").map(squeeze).unwrap_or_default();
            assert_eq!(ours, squeeze(&expected), "{stem} from_display_name");
        }
    }
    assert!(compared > 40, "only {compared} subjects compared");
}

#[test]
fn mail_parser_subjects_and_senders() {
    let Some(files) = corpus::files("email/mail-parser", ".json") else { return };
    for (json_name, json) in &files {
        let stem = json_name.trim_end_matches(".json");
        let Some(raw) = corpus::read(&format!("email/mail-parser/{stem}.eml")) else { return };
        let expected: Value = serde_json::from_slice(json).expect("mail-parser JSON");
        let header = |name: &str| {
            expected["parts"][0]["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h["name"].as_str() == Some(name))
                .map(|h| h["value"].clone())
        };
        let m = decode_message(&raw);
        match header("subject").and_then(|v| v["Text"].as_str().map(str::to_owned)) {
            // mail-parser leaves the raw Latin-1 ö of this Eudora subject as U+FFFD.
            Some(subject) if stem == "legacy-010" => {
                assert!(subject.contains('\u{FFFD}'));
                assert_eq!(m.subject.as_deref(), Some("Die Hasen und die Frösche"));
            }
            Some(subject) => assert_eq!(m.subject.as_deref(), Some(squeeze(&subject).as_str()), "{stem}"),
            None => assert_eq!(m.subject, None, "{stem}"),
        }
        let from = header("from").and_then(|v| v["Address"]["List"][0]["address"].as_str().map(str::to_lowercase));
        if let Some(from) = from.filter(|f| f.contains('@')) {
            assert_eq!(from_field(&m, "address"), Some(from.as_str()), "{stem}");
        }
    }
}
