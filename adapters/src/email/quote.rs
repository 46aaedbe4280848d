//! Strip quoted history and signatures from a plain-text email body, for previews.
//!
//! The full body is always kept; this only decides what a conversation list shows. Removed:
//!
//! - lines quoted with `>` (wherever they are, so inline answers between quotes stay);
//! - an attribution line such as `On Mon, 1 Jan 2024, Ann <ann@example.com> wrote:` (also
//!   wrapped over up to three lines, and its French, German, Spanish, Italian, Dutch,
//!   Portuguese, Scandinavian, Polish, Czech, Russian and Chinese forms: it starts like `On `,
//!   `Le `, `Am `, …, ends with a colon and has the verb) and everything after it;
//! - an Outlook `-----Original Message-----` separator (and its translations) and everything
//!   after it;
//! - an Outlook reply header, a `From:` line followed within four lines by `Sent:` (or its
//!   translations), and everything after it, with the `____` rule Outlook puts above it;
//! - the signature: the `-- ` delimiter line (also without its trailing space) and everything
//!   after it.
//!
//! Forwarded messages are not stripped: a forward without a comment previews as what was
//! forwarded.

/// Lines an attribution may be wrapped over (Gmail wraps long `On … wrote:` lines).
const ATTRIBUTION_MAX_LINES: usize = 3;
/// How far below a `From:` line the `Sent:` line of an Outlook reply header may be.
const OUTLOOK_HEADER_LINES: usize = 4;

/// How an attribution line may begin, per language.
const ATTRIBUTION_PREFIXES: &[&str] =
    &["On ", "Le ", "Am ", "El ", "Il ", "Op ", "Em ", "Den ", "På ", "W dniu ", "在", "於", "Dne "];

/// The verb of an attribution line, per language; the line must also end with a colon.
const ATTRIBUTION_VERBS: &[&str] = &[
    "wrote",
    "écrit",
    "schrieb",
    "escribió",
    "scritto",
    "schreef",
    "escreveu",
    "skrev",
    "napisał",
    "napsal",
    "написал",
    "写道",
    "寫道",
];

/// The words between the dashes of an Outlook original-message separator.
const ORIGINAL_MESSAGE_MARKERS: &[&str] = &[
    "original message",
    "ursprüngliche nachricht",
    "message d'origine",
    "mensaje original",
    "messaggio originale",
    "oorspronkelijk bericht",
    "mensagem original",
    "原始邮件",
    "原始郵件",
    "邮件原件",
    "元のメッセージ",
    "исходное сообщение",
];

/// `From:` labels of an Outlook reply header.
const FROM_LABELS: &[&str] = &["from:", "von:", "de:", "de :", "da:", "van:", "发件人:", "寄件者:", "差出人:", "от:"];
/// `Sent:` labels of an Outlook reply header.
const SENT_LABELS: &[&str] =
    &["sent:", "gesendet:", "envoyé :", "envoyé:", "enviado:", "inviato:", "verzonden:", "发送时间:", "傳送時間:"];

/// The body without quoted history and signature, trailing blank lines removed.
pub fn strip_quotes(body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let mut cut = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if is_signature_delimiter(line)
            || is_original_message_separator(line)
            || is_attribution(&lines[i..])
            || is_outlook_header(&lines[i..])
        {
            cut = i;
            break;
        }
    }
    let mut kept: Vec<&str> = lines[..cut].iter().copied().filter(|line| !is_quoted(line)).collect();
    // Outlook draws a rule above its reply header; trailing blank lines go too.
    while kept.last().is_some_and(|line| is_blank_or_rule(line)) {
        kept.pop();
    }
    while kept.first().is_some_and(|line| line.trim().is_empty()) {
        kept.remove(0);
    }
    kept.join("\n")
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_signature_delimiter(line: &str) -> bool {
    line == "-- " || line == "--"
}

fn is_blank_or_rule(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || (t.len() >= 3 && t.chars().all(|c| c == '_' || c == '-' || c == '─'))
}

/// `-----Original Message-----`, `----- Original Message -----`, `-----原始邮件-----`, …
fn is_original_message_separator(line: &str) -> bool {
    let t = line.trim();
    if !(t.starts_with("--") && t.ends_with("--")) {
        return false;
    }
    let inner = t.trim_matches('-').trim().to_lowercase();
    !inner.is_empty() && ORIGINAL_MESSAGE_MARKERS.contains(&inner.as_str())
}

/// An attribution starting at `lines[0]`, possibly wrapped over a few lines.
fn is_attribution(lines: &[&str]) -> bool {
    let first = strip_emphasis(lines[0]);
    if !ATTRIBUTION_PREFIXES.iter().any(|p| first.starts_with(p)) {
        return false;
    }
    let mut joined = String::new();
    for line in lines.iter().take(ATTRIBUTION_MAX_LINES) {
        if !joined.is_empty() {
            if line.trim().is_empty() || is_quoted(line) {
                break;
            }
            joined.push(' ');
        }
        joined.push_str(strip_emphasis(line).trim_end());
        if joined.ends_with([':', '：']) {
            let lower = joined.to_lowercase();
            return ATTRIBUTION_VERBS.iter().any(|verb| lower.contains(verb));
        }
    }
    false
}

/// `From: …` followed within a few lines by `Sent: …` (Outlook's reply header).
fn is_outlook_header(lines: &[&str]) -> bool {
    if !has_label(lines[0], FROM_LABELS) {
        return false;
    }
    lines.iter().skip(1).take(OUTLOOK_HEADER_LINES).any(|line| has_label(line, SENT_LABELS))
}

fn has_label(line: &str, labels: &[&str]) -> bool {
    let lower = strip_emphasis(line).to_lowercase();
    labels.iter().any(|l| lower.starts_with(l))
}

/// Drop the `*`/`_` emphasis an HTML-to-text conversion may put around `From:`.
fn strip_emphasis(line: &str) -> &str {
    line.trim_start().trim_start_matches(['*', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_plain_message() {
        assert_eq!(strip_quotes("Hello,\n\nit works now.\n"), "Hello,\n\nit works now.");
    }

    #[test]
    fn gmail_reply() {
        let body =
            "Thanks, that fixed it!\r\n\r\nOn Mon, Jan 1, 2024 at 10:00 AM Support <support@example.com> wrote:\r\n\
                    > Please restart the router.\r\n>\r\n> Best,\r\n> Support\r\n";
        assert_eq!(strip_quotes(body), "Thanks, that fixed it!");
    }

    #[test]
    fn attribution_wrapped_over_two_lines() {
        let body = "Yes please.\n\nOn Tue, 2 Jan 2024 at 09:15, Very Long Name Of The Support Team <\nsupport@example.com> wrote:\n\n> Shall we?\n";
        assert_eq!(strip_quotes(body), "Yes please.");
    }

    #[test]
    fn attribution_without_quotes_still_cuts() {
        // Some clients put the history below the attribution without `>`.
        let body = "Top post.\n\nOn Wed, 3 Jan 2024, Ann wrote:\nOld text that is not quoted.\n";
        assert_eq!(strip_quotes(body), "Top post.");
    }

    #[test]
    fn localized_attributions() {
        assert_eq!(strip_quotes("Merci.\n\nLe lun. 1 janv. 2024 à 10:00, Ann <a@b.c> a écrit :\n> x"), "Merci.");
        assert_eq!(strip_quotes("Danke.\n\nAm 01.01.2024 um 10:00 schrieb Ann <a@b.c>:\n> x"), "Danke.");
        assert_eq!(
            strip_quotes("Gracias.\n\nEl lun, 1 ene 2024 a las 10:00, Ann (<a@b.c>) escribió:\n> x"),
            "Gracias."
        );
        assert_eq!(strip_quotes("谢谢。\n\n在 2024年1月1日 10:00，Ann <a@b.c> 写道：\n> x"), "谢谢。");
    }

    #[test]
    fn a_sentence_mentioning_wrote_is_not_an_attribution() {
        let body = "My colleague wrote:\nthe invoice is wrong.";
        assert_eq!(strip_quotes(body), body);
        let body = "On second thought, ignore what I wrote: it was wrong.";
        assert_eq!(strip_quotes(body), body);
    }

    #[test]
    fn inline_answers_between_quotes_are_kept() {
        let body = "> Which version?\n2.4.1\n> Which OS?\nLinux\n";
        assert_eq!(strip_quotes(body), "2.4.1\nLinux");
    }

    #[test]
    fn outlook_original_message() {
        let body =
            "See attached.\r\n\r\n-----Original Message-----\r\nFrom: Support\r\nSent: Monday\r\nTo: Ann\r\n\r\nOld";
        assert_eq!(strip_quotes(body), "See attached.");
        assert_eq!(strip_quotes("Ok\n\n----- Original Message -----\nFrom: x"), "Ok");
        assert_eq!(strip_quotes("好的\n\n-----原始邮件-----\n发件人: x"), "好的");
        assert_eq!(strip_quotes("Gut\n\n-----Ursprüngliche Nachricht-----\nVon: x"), "Gut");
    }

    #[test]
    fn outlook_reply_header_with_rule() {
        let body = "Works for me.\n\n________________________________\nFrom: Support <support@example.com>\n\
                    Sent: Monday, January 1, 2024 10:00 AM\nTo: Ann <ann@example.com>\nSubject: RE: Ticket\n\nOld text";
        assert_eq!(strip_quotes(body), "Works for me.");
        // As html2text renders Outlook's bold labels.
        let body = "Ok.\n\n**From:** Support\n**Sent:** Monday\n**To:** Ann\n\nOld";
        assert_eq!(strip_quotes(body), "Ok.");
    }

    #[test]
    fn from_line_without_sent_is_kept() {
        let body = "From: the warehouse team\nThe parcel left today.";
        assert_eq!(strip_quotes(body), body);
    }

    #[test]
    fn signature_is_removed() {
        assert_eq!(strip_quotes("Hi,\nthanks!\n-- \nAnn Example\nACME Corp"), "Hi,\nthanks!");
        // Many clients drop the trailing space of the delimiter.
        assert_eq!(strip_quotes("Hi\n--\nAnn"), "Hi");
        // Two dashes inside a line are not a delimiter.
        assert_eq!(strip_quotes("a -- b\n---\nc"), "a -- b\n---\nc");
    }

    #[test]
    fn everything_quoted_gives_nothing() {
        assert_eq!(strip_quotes("> a\n> b\n"), "");
        assert_eq!(strip_quotes(""), "");
    }

    #[test]
    fn forwards_are_kept() {
        let body =
            "FYI\n\n---------- Forwarded message ---------\nFrom: Bob <bob@example.com>\nDate: Mon\nSubject: x\n\nBody";
        assert_eq!(strip_quotes(body), body);
    }
}
