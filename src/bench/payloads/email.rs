//! Synthetic support emails of 5–60 KiB (routing key `email.email`), shaped like real inbound
//! mail: `multipart/alternative` plain text and HTML in quoted-printable, some wrapped in
//! `multipart/mixed` with a base64 PDF or PNG attachment, `Received`/`Delivered-To` trace
//! fields, RFC 2047 subjects and names, and threads of three (the customer's question, the
//! agent's reply from the mailbox, the customer's answer) linked by `In-Reply-To` and
//! `References`, replies quoting what came before. Generated, not copied from any corpus.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::DateTime;

use super::{handle, person, prose, BenchMessage, Kind, Rng};

/// Mailboxes (email entry points) the threads are spread over.
pub(in crate::bench) const MAILBOXES: usize = 4;
/// Every generated mail is at least this big and at most [`MAX_BYTES`].
pub(in crate::bench) const MIN_BYTES: usize = 5 * 1024;
pub(in crate::bench) const MAX_BYTES: usize = 60 * 1024;
/// Mails per thread: question, agent reply, follow-up.
const THREAD_LEN: usize = 3;
const STREAM_THREAD: u64 = 0xE1;
const STREAM_MAIL: u64 = 0xE2;
const STREAM_ID: u64 = 0xE3;
const STREAM_TEXT: u64 = 0xE4;

const DOMAINS: &[&str] = &["example.com", "mail.example.org", "customer.test", "post.example.net", "web.example.de"];
const MAILERS: &[&str] = &[
    "Mozilla Thunderbird 128.3.1",
    "Apple Mail (2.3774.600.62)",
    "Microsoft Outlook 16.0",
    "K-9 Mail for Android",
    "Roundcube Webmail/1.6.9",
];

/// The address of the bench's `n`-th mailbox.
pub(in crate::bench) fn mailbox(n: usize) -> String {
    format!("support@bench-mail-{n:02}.test")
}

struct Thread {
    first: &'static str,
    last: &'static str,
    address: String,
    domain: &'static str,
    mailbox: String,
    subject: String,
    order: usize,
}

fn thread(seed: u64, t: usize) -> Thread {
    let mut rng = Rng::new(seed, STREAM_THREAD, t as u64);
    let (first, last) = person(&mut rng);
    let domain = *rng.pick(DOMAINS);
    let order = 100_000 + rng.below(900_000);
    let subject = match rng.below(8) {
        0 => format!("Order #{order} – where is my parcel?"),
        1 => format!("Refund for order #{order}"),
        2 => format!("Wrong size delivered (order #{order})"),
        3 => format!("Rechnung zu Bestellung {order}"),
        4 => format!("Adresse ändern für #{order}"),
        5 => format!("Question about invoice {order}"),
        6 => format!("Damaged item in order #{order}"),
        _ => format!("Livraison en retard – {order}"),
    };
    Thread {
        first,
        last,
        address: format!("{}.{}{}@{domain}", handle(first), handle(last), t % 1000),
        domain,
        mailbox: mailbox(t % MAILBOXES),
        subject,
        order,
    }
}

/// The Message-ID (without `<>`) of email `k` of run `run`.
pub(in crate::bench) fn message_id(seed: u64, run: usize, k: usize) -> String {
    let t = thread(seed, k / THREAD_LEN);
    let host = if k % THREAD_LEN == 1 { t.mailbox.split('@').nth(1).unwrap_or("bench.test") } else { t.domain };
    let tag = Rng::new(seed, STREAM_ID, k as u64).hex(12);
    format!("r{run}.{k:07}.{tag}@{host}")
}

/// Email `k` of run `run` (the `k`-th email of the mix).
pub(in crate::bench) fn email(seed: u64, run: usize, k: usize) -> BenchMessage {
    let mut rng = Rng::new(seed, STREAM_MAIL, k as u64);
    // Skewed towards the small end, as real mail is: 6 KiB .. 56 KiB.
    let target = MIN_BYTES + 1024 + (rng.unit().powi(2) * (MAX_BYTES - MIN_BYTES - 5 * 1024) as f64) as usize;
    let mailbox = thread(seed, k / THREAD_LEN).mailbox;
    if target <= 16 * 1024 && !rng.percent(15) {
        // Text only: the text grows until the mail is about the target size.
        let mut text_len = (target.saturating_sub(2800) * 4 / 9).max(500);
        let mut mail = render(seed, run, k, text_len, None);
        for _ in 0..4 {
            if (target.saturating_sub(512)..=target + 1024).contains(&mail.len()) {
                break;
            }
            text_len = (text_len as i64 + (target as i64 - mail.len() as i64) * 4 / 9).max(300) as usize;
            mail = render(seed, run, k, text_len, None);
        }
        return BenchMessage { kind: Kind::Email, external_channel_id: Some(mailbox), body: mail.into_bytes() };
    }
    let mixed_boundary = format!("----=_Mixed_{k}_{}", rng.hex(16));
    let mut mail = render(seed, run, k, rng.range(600, 3000), Some(&mixed_boundary));
    // The attachment fills the rest; base64 takes 78 bytes (76 and CRLF) per 57 raw bytes.
    let room = target.saturating_sub(mail.len() + 300);
    let raw_len = (room * 57 / 78).max(2048);
    let (name, content_type, bytes) = if rng.percent(60) {
        (format!("invoice-{}.pdf", thread(seed, k / THREAD_LEN).order), "application/pdf", pdf_like(&mut rng, raw_len))
    } else {
        (format!("photo-{}.png", rng.range(1000, 9999)), "image/png", png_like(&mut rng, raw_len))
    };
    mail.push_str(&format!(
        "Content-Type: {content_type}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ));
    let encoded = BASE64.encode(&bytes);
    for line in encoded.as_bytes().chunks(76) {
        mail.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        mail.push_str("\r\n");
    }
    mail.push_str(&format!("--{mixed_boundary}--\r\n"));
    BenchMessage { kind: Kind::Email, external_channel_id: Some(mailbox), body: mail.into_bytes() }
}

/// Header and text parts of email `k` with about `text_len` bytes of text; with
/// `mixed_boundary`, inside a `multipart/mixed` left open for an attachment part. The same
/// arguments give the same bytes.
fn render(seed: u64, run: usize, k: usize, text_len: usize, mixed_boundary: Option<&str>) -> String {
    let pos = k % THREAD_LEN;
    let th = thread(seed, k / THREAD_LEN);
    let mut rng = Rng::new(seed, STREAM_TEXT, k as u64);
    let outbound = pos == 1;
    let date = DateTime::from_timestamp(super::message_time(run, k * 41), 0).expect("valid time");
    let customer = format!("{} {}", th.first, th.last);
    let (from_addr, from, to) = if outbound {
        (th.mailbox.clone(), address("Support Team", &th.mailbox), address(&customer, &th.address))
    } else {
        (th.address.clone(), address(&customer, &th.address), address("Support", &th.mailbox))
    };
    let subject = if pos == 0 { encode_word(&th.subject) } else { format!("Re: {}", encode_word(&th.subject)) };

    let mut mail = String::with_capacity(text_len * 3 + 4096);
    let sender_host = if outbound { th.mailbox.split('@').nth(1).unwrap_or("bench.test") } else { th.domain };
    let helo = format!("mail-out{}.{sender_host}", rng.range(1, 40));
    let smtp_id = rng.hex(10).to_uppercase();
    let date = date.to_rfc2822();
    mail.push_str(&format!("Return-Path: <{from_addr}>\r\nDelivered-To: {}\r\n", th.mailbox));
    mail.push_str(&format!(
        "Received: from {helo} ({helo} [203.0.113.{}])\r\n\tby mx1.bench-mail.test (Postfix) with ESMTPS id {smtp_id}\r\n\tfor <{}>; {date}\r\n",
        rng.range(2, 250),
        th.mailbox
    ));
    mail.push_str(&format!("Received: by {helo} with SMTP id {}; {date}\r\n", rng.hex(16)));
    mail.push_str(&format!("MIME-Version: 1.0\r\nDate: {date}\r\nMessage-ID: <{}>\r\n", message_id(seed, run, k)));
    if pos > 0 {
        let refs: Vec<String> = (k - pos..k).map(|j| format!("<{}>", message_id(seed, run, j))).collect();
        mail.push_str(&format!("In-Reply-To: {}\r\nReferences: {}\r\n", refs[refs.len() - 1], refs.join("\r\n ")));
    }
    mail.push_str(&format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n"));
    mail.push_str(&format!("User-Agent: {}\r\nContent-Language: en-GB\r\n", rng.pick(MAILERS)));

    // The text: greeting, paragraphs, signature, and for replies the quoted history.
    let greeting = if outbound { format!("Hello {},", th.first) } else { "Hello,".to_owned() };
    let signature = if outbound {
        "Kind regards,\nThe Support Team\nhttps://shop.example.com/help".to_owned()
    } else {
        format!("Best regards,\n{customer}")
    };
    let quoted_len = if pos > 0 { rng.range(200, 1200).min(text_len / 2) } else { 0 };
    let mut paragraphs = Vec::new();
    let mut written = 0;
    while written < text_len.saturating_sub(quoted_len) {
        let len = rng.range(200, 500);
        paragraphs.push(prose(&mut rng, len, true));
        written += len;
    }
    let quoted = (pos > 0).then(|| prose(&mut rng, quoted_len, true));
    let plain = plain_text(&greeting, &paragraphs, &signature, quoted.as_deref(), &date, &th);
    let html = html_text(&greeting, &paragraphs, &signature, quoted.as_deref(), &date, &th);

    let alt_boundary = format!("----=_Alt_{k}_{}", rng.hex(16));
    let alternative = format!(
        "--{alt_boundary}\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}--{alt_boundary}\r\nContent-Type: text/html; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{}--{alt_boundary}--\r\n",
        quoted_printable(&plain),
        quoted_printable(&html)
    );
    match mixed_boundary {
        None => {
            mail.push_str(&format!("Content-Type: multipart/alternative; boundary=\"{alt_boundary}\"\r\n\r\n"));
            mail.push_str(&alternative);
        }
        Some(mixed) => {
            mail.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"{mixed}\"\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n--{mixed}\r\nContent-Type: multipart/alternative; boundary=\"{alt_boundary}\"\r\n\r\n"
            ));
            mail.push_str(&alternative);
            mail.push_str(&format!("\r\n--{mixed}\r\n"));
        }
    }
    mail
}

/// `"Name" <address>`, or an RFC 2047 encoded word for a name that is not ASCII.
fn address(name: &str, addr: &str) -> String {
    if name.is_ascii() {
        format!("\"{name}\" <{addr}>")
    } else {
        format!("{} <{addr}>", encode_word(name))
    }
}

/// The text itself when ASCII, else one RFC 2047 `B` encoded word.
fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        text.to_owned()
    } else {
        format!("=?UTF-8?B?{}?=", BASE64.encode(text))
    }
}

/// Wrap at 76 columns, on spaces.
fn wrap(paragraph: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(paragraph.len() + paragraph.len() / 70 * 3);
    let mut line = String::new();
    for word in paragraph.split(' ') {
        if !line.is_empty() && line.chars().count() + word.chars().count() + prefix.len() >= 76 {
            out.push_str(prefix);
            out.push_str(line.trim_end());
            out.push('\n');
            line.clear();
        }
        line.push_str(word);
        line.push(' ');
    }
    out.push_str(prefix);
    out.push_str(line.trim_end());
    out
}

fn plain_text(
    greeting: &str,
    paragraphs: &[String],
    signature: &str,
    quoted: Option<&str>,
    date: &str,
    th: &Thread,
) -> String {
    let mut text = format!("{greeting}\n\n");
    for p in paragraphs {
        text.push_str(&wrap(p, ""));
        text.push_str("\n\n");
    }
    text.push_str(signature);
    text.push('\n');
    if let Some(q) = quoted {
        text.push_str(&format!("\nOn {date}, {} {} <{}> wrote:\n", th.first, th.last, th.address));
        text.push_str(&wrap(q, "> "));
        text.push('\n');
    }
    text
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn html_text(
    greeting: &str,
    paragraphs: &[String],
    signature: &str,
    quoted: Option<&str>,
    date: &str,
    th: &Thread,
) -> String {
    let mut html = String::from(
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\n\
         <style type=\"text/css\">body{font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222}p{margin:0 0 12px}</style>\n\
         </head><body><div dir=\"ltr\">\n",
    );
    html.push_str(&format!("<p>{}</p>\n", escape(greeting)));
    for p in paragraphs {
        html.push_str(&format!("<p style=\"margin:0 0 12px\">{}</p>\n", escape(p)));
    }
    html.push_str(&format!("<p>{}</p>\n", escape(signature).replace('\n', "<br>\n")));
    if let Some(q) = quoted {
        html.push_str(&format!(
            "<div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">On {date}, {} {} &lt;<a href=\"mailto:{addr}\">{addr}</a>&gt; wrote:<br></div>\n\
             <blockquote class=\"gmail_quote\" style=\"margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex\">{}</blockquote></div>\n",
            escape(th.first),
            escape(th.last),
            escape(q),
            addr = th.address,
        ));
    }
    html.push_str("</div></body></html>\n");
    html
}

/// Quoted-printable (RFC 2045) with CRLF line ends and soft breaks at 76 columns; ends with a
/// hard line break.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push_str("\r\n");
        }
        let bytes = line.as_bytes();
        let mut column = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let encode = b == b'=' || !(0x20..0x7f).contains(&b) && b != b'\t' || (last && (b == b' ' || b == b'\t'));
            let width = if encode { 3 } else { 1 };
            if column + width > 75 {
                out.push_str("=\r\n");
                column = 0;
            }
            if encode {
                out.push_str(&format!("={b:02X}"));
            } else {
                out.push(b as char);
            }
            column += width;
        }
    }
    out.push_str("\r\n");
    out
}

fn pdf_like(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n3 0 obj\n<< /Length 0 /Filter /FlateDecode >>\nstream\n".to_vec();
    let tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";
    bytes.extend(rng.bytes(len.saturating_sub(bytes.len() + tail.len())));
    bytes.extend_from_slice(tail);
    bytes
}

fn png_like(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut bytes =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x04\x00\x00\x00\x03\x00\x08\x06\x00\x00\x00".to_vec();
    bytes.extend_from_slice(b"\x00\x00\x00\x00IDAT");
    let tail = b"\x00\x00\x00\x00IEND\xaeB`\x82";
    bytes.extend(rng.bytes(len.saturating_sub(bytes.len() + tail.len())));
    bytes.extend_from_slice(tail);
    bytes
}

#[cfg(test)]
mod tests {
    use intake_adapters::email::EmailConfig;
    use intake_adapters::{Delivery, Direction, EntryPointInfo, Headers, UpdateAction};

    use super::*;

    #[test]
    fn quoted_printable_lines_are_short_and_end_hard() {
        let text = format!("{}\nGrüße = {}\ntrailing space ", "x".repeat(200), "é".repeat(40));
        let qp = quoted_printable(&text);
        assert!(qp.split("\r\n").all(|l| l.len() <= 76), "{qp}");
        assert!(qp.contains("Gr=C3=BC=C3=9Fe =3D"));
        assert!(qp.ends_with("space=20\r\n"));
        assert!(!qp.ends_with("=\r\n"));
    }

    #[test]
    fn emails_are_5_to_60_kib_and_decode_into_threads() {
        let config = EmailConfig::default();
        let headers = Headers::new();
        let mut attachments = 0;
        for k in 0..300 {
            let message = email(11, 4, k);
            let size = message.body.len();
            assert!((MIN_BYTES..=MAX_BYTES).contains(&size), "email {k}: {size} bytes");
            let mailbox = message.external_channel_id.clone().expect("envelope recipient");
            let delivery = Delivery {
                body: &message.body,
                headers: &headers,
                external_channel_id: Some(&mailbox),
                received_at: chrono::Utc::now(),
            };
            let mut updates = intake_adapters::email::decode(&delivery, &config).expect("decodes");
            assert_eq!(updates.len(), 1);
            let update = &mut updates[0];
            assert_eq!(update.channel_id_candidates(Some(&mailbox))[0], mailbox);
            let metadata = serde_json::Map::new();
            let info = EntryPointInfo { external_channel_id: &mailbox, adapter_key: "email", metadata: &metadata };
            intake_adapters::email::refine(update, &info);
            let UpdateAction::Append(m) = &update.action else { panic!("email {k}: not an append") };
            assert_eq!(m.idempotency_key, message_id(11, 4, k));
            assert!(m.body.len() > 400, "email {k}: body of {} bytes", m.body.len());
            assert!(m.occurred_at < chrono::Utc::now() + chrono::Duration::hours(24), "within intake's future skew");
            assert_eq!(m.direction == Direction::Outbound, k % THREAD_LEN == 1, "email {k}");
            if k % THREAD_LEN > 0 {
                assert_eq!(update.thread.references.last(), Some(&message_id(11, 4, k - 1)));
            }
            attachments += m.attachments.len();
        }
        assert!(attachments > 50, "{attachments} attachments in 300 mails");
    }
}
