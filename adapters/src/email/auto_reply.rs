//! Recognizing auto-replies (vacation notices, auto-responders, list mail) and bounces.
//!
//! Bounces are checked first, then auto-replies; the first signal found is reported:
//!
//! | signal | kind |
//! | --- | --- |
//! | `Content-Type: multipart/report; report-type=delivery-status`, or a `message/delivery-status` part | bounce |
//! | sender `mailer-daemon@…` or `postmaster@…` | bounce |
//! | `Auto-Submitted` with any value but `no` (RFC 3834) | auto-reply |
//! | `X-Autoreply`, `X-Autorespond` (any value but `no`/`false`) | auto-reply |
//! | `Precedence: bulk`, `auto_reply`, `junk` or `list` | auto-reply |
//! | any other `multipart/report` (read receipts, abuse reports) | auto-reply |
//! | an empty `Return-Path: <>` (null reverse path) | auto-reply |
//!
//! `X-Auto-Response-Suppress` alone is not a signal: Outlook sets it on ordinary mail too.

/// What kind of automatic mail it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AutoReply,
    Bounce,
}

impl Kind {
    /// The value of `metadata.autoReply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AutoReply => "auto_reply",
            Kind::Bounce => "bounce",
        }
    }
}

/// The header values detection looks at (raw, trimmed).
#[derive(Debug, Default, Clone, Copy)]
pub struct Signals<'a> {
    pub auto_submitted: Option<&'a str>,
    pub x_autoreply: Option<&'a str>,
    pub x_autorespond: Option<&'a str>,
    pub precedence: Option<&'a str>,
    /// The top-level media type, lower-cased (`multipart/report`).
    pub content_type: Option<&'a str>,
    /// Its `report-type` parameter, lower-cased.
    pub report_type: Option<&'a str>,
    /// Whether some part is `message/delivery-status`.
    pub has_delivery_status_part: bool,
    /// The normalized From address.
    pub from: Option<&'a str>,
    /// The first `Return-Path` as written.
    pub return_path: Option<&'a str>,
}

/// Why a message counts as automatic: its kind and the header that said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: Kind,
    /// The header and value that triggered the detection, e.g. `Auto-Submitted: auto-replied`.
    pub reason: String,
}

/// Longest header value quoted in a reason.
const MAX_REASON_VALUE: usize = 64;

pub fn detect(s: &Signals<'_>) -> Option<Detection> {
    let hit = |kind, header: &str, value: &str| {
        let value: String = value.chars().take(MAX_REASON_VALUE).collect();
        Some(Detection { kind, reason: format!("{header}: {value}") })
    };
    let is_report = s.content_type == Some("multipart/report");
    if is_report && s.report_type == Some("delivery-status") {
        return hit(Kind::Bounce, "Content-Type", "multipart/report; report-type=delivery-status");
    }
    if s.has_delivery_status_part {
        return hit(Kind::Bounce, "Content-Type", "message/delivery-status");
    }
    if let Some(from) = s.from {
        let local = from.rsplit_once('@').map_or(from, |(l, _)| l);
        if local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster") {
            return hit(Kind::Bounce, "From", from);
        }
    }
    if let Some(v) = s.auto_submitted {
        // `Auto-Submitted: no; x-comment` is a person's mail.
        let keyword = v.split(';').next().unwrap_or_default().trim();
        if !keyword.is_empty() && !keyword.eq_ignore_ascii_case("no") {
            return hit(Kind::AutoReply, "Auto-Submitted", v);
        }
    }
    for (header, value) in [("X-Autoreply", s.x_autoreply), ("X-Autorespond", s.x_autorespond)] {
        if let Some(v) = value {
            if !(v.eq_ignore_ascii_case("no") || v.eq_ignore_ascii_case("false")) {
                return hit(Kind::AutoReply, header, v);
            }
        }
    }
    if let Some(v) = s.precedence {
        let p = v.trim().to_ascii_lowercase();
        if matches!(p.as_str(), "bulk" | "auto_reply" | "auto-reply" | "junk" | "list") {
            return hit(Kind::AutoReply, "Precedence", v);
        }
    }
    if is_report {
        return hit(
            Kind::AutoReply,
            "Content-Type",
            &format!("multipart/report; report-type={}", s.report_type.unwrap_or("")),
        );
    }
    if let Some(v) = s.return_path {
        if v.trim().trim_start_matches('<').trim_end_matches('>').trim().is_empty() {
            return hit(Kind::AutoReply, "Return-Path", "<>");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: Signals<'_>) -> Option<(Kind, String)> {
        detect(&s).map(|d| (d.kind, d.reason))
    }

    #[test]
    fn person_mail_is_not_automatic() {
        assert_eq!(kind(Signals { from: Some("ann@example.com"), ..Default::default() }), None);
        assert_eq!(kind(Signals { auto_submitted: Some("no"), ..Default::default() }), None);
        assert_eq!(kind(Signals { auto_submitted: Some("No; x-reason=test"), ..Default::default() }), None);
        assert_eq!(kind(Signals { precedence: Some("first-class"), ..Default::default() }), None);
        assert_eq!(kind(Signals { return_path: Some("<ann@example.com>"), ..Default::default() }), None);
        assert_eq!(kind(Signals { x_autoreply: Some("no"), ..Default::default() }), None);
    }

    #[test]
    fn auto_replies() {
        assert_eq!(
            kind(Signals { auto_submitted: Some("auto-replied"), ..Default::default() }),
            Some((Kind::AutoReply, "Auto-Submitted: auto-replied".into()))
        );
        assert_eq!(
            kind(Signals { auto_submitted: Some("auto-generated"), ..Default::default() }).map(|k| k.0),
            Some(Kind::AutoReply)
        );
        assert_eq!(kind(Signals { x_autoreply: Some("yes"), ..Default::default() }).unwrap().1, "X-Autoreply: yes");
        assert_eq!(kind(Signals { x_autorespond: Some("1"), ..Default::default() }).unwrap().1, "X-Autorespond: 1");
        for p in ["bulk", "auto_reply", "junk", "list", "BULK"] {
            assert_eq!(kind(Signals { precedence: Some(p), ..Default::default() }).unwrap().0, Kind::AutoReply);
        }
        assert_eq!(kind(Signals { return_path: Some("<>"), ..Default::default() }).unwrap().1, "Return-Path: <>");
        assert_eq!(
            kind(Signals {
                content_type: Some("multipart/report"),
                report_type: Some("disposition-notification"),
                ..Default::default()
            })
            .unwrap(),
            (Kind::AutoReply, "Content-Type: multipart/report; report-type=disposition-notification".into())
        );
    }

    #[test]
    fn bounces_win_over_auto_reply_signals() {
        let dsn = Signals {
            content_type: Some("multipart/report"),
            report_type: Some("delivery-status"),
            auto_submitted: Some("auto-replied"),
            return_path: Some("<>"),
            ..Default::default()
        };
        assert_eq!(kind(dsn).unwrap().0, Kind::Bounce);
        assert_eq!(
            kind(Signals { from: Some("MAILER-DAEMON@example.com"), ..Default::default() }).unwrap(),
            (Kind::Bounce, "From: MAILER-DAEMON@example.com".into())
        );
        assert_eq!(
            kind(Signals { from: Some("postmaster@example.com"), ..Default::default() }).unwrap().0,
            Kind::Bounce
        );
        assert_eq!(kind(Signals { has_delivery_status_part: true, ..Default::default() }).unwrap().0, Kind::Bounce);
    }
}
